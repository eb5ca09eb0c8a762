"""GradNorm (Chen et al., ICML 2018) with one task per attribute, on top of per-attribute BCE.

Each training step, with per-attribute losses L_j and task weights w_j (start at 1):
  G_j   = || d(w_j L_j) / dW ||_2 on W = the model's last shared layer (``shared_params()``,
          the layer before the head; never the head itself)
  r_j   = L~_j / mean(L~),  L~_j = L_j(t) / L_j(0)   (L_j(0): the first non-zero loss seen)
  L_grad = sum_j | G_j - mean(G) * r_j^alpha |        (the target is a constant)
w is moved by d L_grad / dw alone, with its own Adam optimizer that lives as long as the loss
(and is saved in its state_dict), then clamped positive and renormalised to sum_j w_j = A.
The model is trained on sum_j w_j L_j with the weights *before* this step's update, detached.

The gradients on W are taken with ``torch.autograd.grad`` (they never touch ``.grad``), so the
engine's ``loss.backward()`` is unaffected. Under torch.distributed, the losses and gradient
norms are averaged over ranks first, so every rank moves w identically.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from configs.errors import ConfigError
from losses.bce import BCETerm

MIN_WEIGHT = 1e-3  # keeps w positive: G_j = w_j ||dL_j/dW|| only holds for w_j > 0


class GradNormError(ConfigError):
    """GradNorm cannot run with this model / fine-tuning mode; the message says why."""


class GradNormWeights(nn.Module):
    """The GradNorm task weights of ``num_attrs`` tasks: ``w = weights(losses)`` returns this step's
    (detached) weights and, in training, moves them as the module note says. GradNormTerm uses one
    task per attribute; TASK multitask uses it for the two tasks (REID.TASK_WEIGHTING gradnorm)."""

    def __init__(self, num_attrs: int, shared_params: Callable[[], list[nn.Parameter]], *, alpha: float = 1.5,
                 lr: float = 0.025):
        super().__init__()
        self.num_attrs = num_attrs
        self.alpha = alpha
        self._shared = shared_params  # a callable: the model's parameters must not enter this state_dict
        self.weights = nn.Parameter(torch.ones(num_attrs))
        self.register_buffer("initial_losses", torch.zeros(num_attrs))
        self.register_buffer("initial_set", torch.zeros(num_attrs, dtype=torch.bool))
        self.optimizer = torch.optim.Adam([self.weights], lr=lr)
        self.last_grad_loss = torch.zeros(())
        self.skipped_updates = 0  # weight updates skipped for non-finite losses / gradients (this process)

    # --- state: the Adam moments and step count travel with the weights (checkpoint / resume)
    def get_extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def move_optimizer_state(self, device: torch.device) -> None:
        for st in self.optimizer.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and k != "step":  # Adam keeps 'step' on the CPU
                    st[k] = v.to(device)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """(num_attrs,) losses -> the weights to train on this step (before this step's update)."""
        w_now = self.weights.detach().clone()  # clone: the update below is in place
        if self.training and torch.is_grad_enabled() and losses.requires_grad:
            self._update(losses)
        return w_now

    def shared_trainable(self) -> list[nn.Parameter]:
        params = [p for p in self._shared() if p.requires_grad]
        if not params:
            raise GradNormError("GradNorm needs a trainable shared layer (model.shared_params()), but it is "
                                "frozen (FINETUNE.MODE head?); use full/partial fine-tuning or another loss")
        return params

    def _update(self, losses: torch.Tensor) -> None:
        # An overflowing batch (inf/NaN losses or gradients) must not reach w or Adam's moments: NaN
        # survives clamp_ and the renormalisation, so one such step would poison w for good, and
        # TRAIN.ON_NONFINITE skip (which skips the model's step) could never recover. Skip it here too,
        # decided on the values reduced over the DDP ranks (inf/NaN spreads through the sum), so every
        # rank enters the same collectives and skips together.
        shared = self.shared_trainable()
        norms = []
        for j in range(self.num_attrs):
            grads = torch.autograd.grad(losses[j], shared, retain_graph=True, allow_unused=True)
            sq = [g.float().pow(2).sum() for g in grads if g is not None]
            norms.append(torch.stack(sq).sum().sqrt() if sq else losses.new_zeros(()))
        with torch.autocast(device_type=losses.device.type, enabled=False), torch.no_grad():
            grad_norms = torch.stack(norms).float()
            current = losses.detach().float()
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                both = torch.cat([grad_norms, current])
                dist.all_reduce(both)
                both /= dist.get_world_size()
                grad_norms, current = both[: self.num_attrs], both[self.num_attrs:]
            if not bool(torch.isfinite(grad_norms).all() and torch.isfinite(current).all()):
                self.skipped_updates += 1
                return
            newly = ~self.initial_set & (current > 0)
            self.initial_losses.copy_(torch.where(newly, current, self.initial_losses))
            self.initial_set |= newly
            rel = torch.where(self.initial_set, current / self.initial_losses.clamp(min=1e-12),
                              torch.ones_like(current))
            inverse_rate = rel / rel.mean().clamp(min=1e-12)
        with torch.autocast(device_type=losses.device.type, enabled=False), torch.enable_grad():
            g = self.weights * grad_norms  # = ||d(w_j L_j)/dW|| for w_j > 0
            target = (g.mean() * inverse_rate.pow(self.alpha)).detach()
            grad_loss = (g - target).abs().sum()
            (dw,) = torch.autograd.grad(grad_loss, self.weights)
        if not bool(torch.isfinite(dw).all()):
            self.skipped_updates += 1
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.weights.grad = dw
        self.optimizer.step()
        self.weights.grad = None
        with torch.no_grad():
            self.weights.clamp_(min=MIN_WEIGHT)
            self.weights.mul_(self.num_attrs / self.weights.sum())
        self.last_grad_loss = grad_loss.detach()


class GradNormTerm(GradNormWeights):
    """Per-attribute BCE, each attribute a GradNorm task (the ``gradnorm`` loss term)."""

    def __init__(self, num_attrs: int, shared_params: Callable[[], list[nn.Parameter]], *, alpha: float = 1.5,
                 lr: float = 0.025, label_smooth: float = 0.0, sample_weight: bool = False, scale: float = 1.0):
        super().__init__(num_attrs, shared_params, alpha=alpha, lr=lr)
        self.base = BCETerm(label_smooth, sample_weight, scale)

    def forward(self, z: torch.Tensor, y: torch.Tensor, known: torch.Tensor, priors: torch.Tensor | None,
                sizesum: bool) -> torch.Tensor:
        losses = self.base(z, y, known, priors, sizesum)  # (A,)
        return super().forward(losses) * losses
