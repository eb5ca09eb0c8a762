"""The state of label-balanced stage 2 (TRAIN.STAGE2) beside the model, all on the training device.

* ``FeatureBanks`` (FRDL): per attribute j and label value y a FIFO of the ``size`` most recent attribute
  features, one tensor (N, 2, size + 1, C) with write pointers and fill counts; ``push`` and ``draw`` are
  a handful of tensor ops for the whole batch (no loop over B x N, no host sync).
* ``FloodLevels`` (GOAT): b_j^y, the mean stage-1 loss per attribute and label, recorded in epoch 0.
* ``ExtractorSnapshot`` (GOAT): an in-memory copy of the stage-1 extractor (backbone + split), restored
  bit for bit.
* ``LabelBalanced``: the frozen stage-1 heads, the above and the sampling generator, with one
  ``state_dict`` for last.pth.

The trainer is not imported here (``tools.engine.stage2`` drives these).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

# The new heads: the only part of the model stage 2's head optimiser trains (and that a reset leaves alone).
NEW_HEADS = "head.classifier."


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class FeatureBanks:
    """Per (attribute, label) FIFO banks of the most recent attribute features.

    Slot ``size`` of every bank is a write-off: labels that are unknown (or beyond the last ``size`` of
    one batch) are written there, so the batch is written with one ``index_copy_`` and no host sync.
    ``draw`` takes, for each slot and attribute, an entry uniformly among the filled ones of the drawn
    label's bank (with replacement): no read pointers to keep, and in distribution the same as the
    original's shuffled read order except that an entry may come twice in one lap."""

    def __init__(self, num_attrs: int, dim: int, size: int, device: torch.device):
        self.size = size
        self.feats = torch.zeros(num_attrs, 2, size + 1, dim, device=device)
        self.ptr = torch.zeros(num_attrs, 2, dtype=torch.long, device=device)
        self.count = torch.zeros(num_attrs, 2, dtype=torch.long, device=device)

    def _rows(self, attr: torch.Tensor, lab: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Flat row indices into ``feats.view(-1, C)`` (one index_select / index_copy_ instead of 3-D indexing)."""
        return ((attr * 2 + lab) * (self.size + 1) + pos).reshape(-1)

    @torch.no_grad()
    def push(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """``z`` (B, N, C) attribute features, ``y`` (B, N) labels 1 / 0 / -1 (unknown: not stored)."""
        n_attrs, dim = z.shape[1], z.shape[2]
        lab = (y > 0.5).long()
        known = (y >= 0) & torch.isfinite(z.sum(-1))  # a non-finite feature (a step to be skipped) stays out
        onehot = nn.functional.one_hot(lab, 2).bool() & known[..., None]  # (B, N, 2)
        new = onehot.sum(0)  # (N, 2) entries per bank in this batch
        rank = (onehot.long().cumsum(0) - 1).gather(2, lab[..., None]).squeeze(2)  # (B, N) order in its bank
        attr = torch.arange(n_attrs, device=z.device).expand_as(lab)
        keep = known & (rank >= new[attr, lab] - self.size)  # of one batch, the last `size` of a bank stay
        pos = torch.where(keep, (self.ptr[attr, lab] + rank) % self.size, self.size)
        self.feats.view(-1, dim).index_copy_(0, self._rows(attr, lab, pos), z.reshape(-1, dim).to(self.feats.dtype))
        self.ptr.copy_((self.ptr + new) % self.size)
        self.count.copy_((self.count + new).clamp(max=self.size))

    @torch.no_grad()
    def draw(self, batch: int, pos_prob: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, C) features and (B, N) labels: every slot and attribute draws y ~ Bernoulli(pos_prob)
        independently, then an entry of bank (j, y). A label never seen for an attribute yet is replaced
        by the other one; an attribute with both banks empty gets label -1 (masked by the loss)."""
        n_attrs, dim, dev = self.count.shape[0], self.feats.shape[-1], self.feats.device
        want = (torch.rand(batch, n_attrs, generator=gen, device=dev) < pos_prob).long()
        attr = torch.arange(n_attrs, device=dev).expand_as(want)
        lab = torch.where(self.count[attr, want] > 0, want, 1 - want)
        filled = self.count[attr, lab]
        u = torch.rand(batch, n_attrs, generator=gen, device=dev)
        idx = torch.minimum((u * filled).long(), (filled - 1).clamp(min=0))
        labels = torch.where(filled > 0, lab, -1).to(torch.float32)
        feats = self.feats.view(-1, dim).index_select(0, self._rows(attr, lab, idx)).view(batch, n_attrs, dim)
        return feats, labels

    def state_dict(self) -> dict:
        return {"feats": self.feats, "ptr": self.ptr, "count": self.count}

    def load_state_dict(self, d: dict) -> None:
        for k in ("feats", "ptr", "count"):
            getattr(self, k).copy_(d[k])


class FloodLevels:
    """b_j^y: the mean stage-1 loss of attribute j over the epoch-0 labels y (0 where none was seen)."""

    def __init__(self, num_attrs: int, device: torch.device):
        self.sums = torch.zeros(num_attrs, 2, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_attrs, 2, dtype=torch.float64, device=device)
        self.levels = torch.zeros(num_attrs, 2, device=device)

    @torch.no_grad()
    def record(self, losses: torch.Tensor, y: torch.Tensor, known: torch.Tensor) -> None:
        """Add one batch's (B, N) element losses of the stage-1 heads."""
        pos, neg = (known & (y > 0.5)).double(), (known & (y <= 0.5)).double()
        ell = torch.where(known, losses, 0).double()
        self.sums += torch.stack([(ell * neg).sum(0), (ell * pos).sum(0)], 1)
        self.counts += torch.stack([neg.sum(0), pos.sum(0)], 1)

    @torch.no_grad()
    def finalize(self) -> torch.Tensor:
        """The levels from the epoch's sums (over every DDP rank); returns them, (N, 2) [neg, pos]."""
        sums, counts = _all_reduce_sum(self.sums.clone()), _all_reduce_sum(self.counts.clone())
        self.levels.copy_((sums / counts.clamp(min=1)).float())
        return self.levels

    def state_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts, "levels": self.levels}

    def load_state_dict(self, d: dict) -> None:
        for k in ("sums", "counts", "levels"):
            getattr(self, k).copy_(d[k])


class ExtractorSnapshot:
    """A copy of every model tensor but the new heads' (backbone, split, their BatchNorm buffers)."""

    def __init__(self, model: nn.Module):
        self.tensors = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(NEW_HEADS)}

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        own = model.state_dict()
        for k, v in self.tensors.items():
            own[k].copy_(v)

    def state_dict(self) -> dict:
        return dict(self.tensors)

    def load_state_dict(self, d: dict) -> None:
        for k, v in self.tensors.items():
            v.copy_(d[k])


class LabelBalanced:
    """Stage 2's state for a split-head ``model`` just loaded with the stage-1 weights: the stage-1
    heads are copied aside (frozen), ``model.head.classifier`` is re-initialised as the new heads."""

    def __init__(self, model: nn.Module, mode: str, bank_size: int, seed: int):
        head, device = model.head, next(model.parameters()).device
        self.frdl, self.goat = "frdl" in mode, "goat" in mode
        self.stage1_heads = copy.deepcopy(head.classifier).requires_grad_(False)
        head.classifier.reset_parameters()
        self.banks = FeatureBanks(head.num_attrs, head.dim, bank_size, device) if self.frdl else None
        self.flood = FloodLevels(head.num_attrs, device) if self.goat else None
        self.snapshot = ExtractorSnapshot(model) if self.goat else None
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def _parts(self) -> dict:
        return {"stage1_heads": self.stage1_heads, "banks": self.banks, "flood": self.flood,
                "snapshot": self.snapshot}

    def state_dict(self) -> dict:
        out = {k: (p.state_dict() if p is not None else None) for k, p in self._parts().items()}
        out["generator"] = self.gen.get_state()
        return out

    def load_state_dict(self, d: dict) -> None:
        for k, p in self._parts().items():
            if p is not None:
                p.load_state_dict(d[k])
        self.gen.set_state(d["generator"])
