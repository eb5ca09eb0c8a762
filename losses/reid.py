"""Person re-identification losses: identity classification and metric learning.

Identity (ID) losses take (B, C) scores and integer identity labels (0..C-1):
  * ``softmax``: cross-entropy with label smoothing (Szegedy et al. 2016): the target is
    (1 - eps) one-hot + eps / C (torchreid / BoT; eps = 0 is plain CE), on the logits of a linear
    classifier;
  * ``cosface`` (Wang et al. 2018), ``arcface`` (Deng et al. 2019), ``circle`` (Sun et al. 2020,
    the classification form of fast-reid's CircleSoftmax): on the cosines of a normalised
    classifier (``models.reid_head`` with ``cosine=True``), with scale s and margin m:
      cosface: s (cos_y - m) for the true class, s cos_j otherwise;
      arcface: s cos(theta_y + m), falling back to s (cos_y - m sin m) once theta_y + m > pi
               (insightface's rule, keeps the logit decreasing in theta);
      circle:  s a_p (cos_y - (1 - m)) with a_p = [1 + m - cos_y]+, s a_n (cos_j - m) with
               a_n = [cos_j + m]+ (a_p, a_n are weights: no gradient flows through them);
    then the label-smoothed cross-entropy of those logits.
Metric losses take (B, D) embeddings (the head's pre-BN feature) and identity labels:
  * batch-hard triplet (Hermans et al. 2017): per anchor, the farthest positive and the nearest
    negative in the batch (Euclidean), [d_ap - d_an + margin]+, or soft-margin log(1 + exp(d_ap - d_an));
    anchors with no positive or no negative in the batch are left out of the mean;
  * center loss (Wen et al. 2016, BoT / torchreid form): mean over the batch of ||x_i - c_{y_i}||^2,
    the centers being parameters (BoT trains them with their own SGD, lr 0.5).
``build_reid_losses(cfg.REID, num_classes, feat_dim)`` -> :class:`ReIDCriterion`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from configs import ConfigError

ID_LOSSES = ("softmax", "cosface", "arcface", "circle", "none")
MARGIN_LOSSES = ("cosface", "arcface", "circle")  # need a cosine classifier
TRIPLETS = ("hard", "soft", "none")


def label_smooth_ce(logits: torch.Tensor, labels: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """Mean over the batch of -sum_c q_c log p_c, q = (1 - eps) one-hot + eps / C."""
    logp = F.log_softmax(logits.float(), dim=1)
    nll = -logp.gather(1, labels.long()[:, None]).squeeze(1)
    return ((1.0 - eps) * nll - eps * logp.mean(1)).mean()


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, kind: str, s: float, m: float) -> torch.Tensor:
    """Cosines (B, C) in [-1, 1] -> the scaled margin logits of ``kind`` (see the module note)."""
    cos = cos.float().clamp(-1.0, 1.0)
    target = F.one_hot(labels.long(), cos.shape[1]).bool()
    if kind == "cosface":
        return s * torch.where(target, cos - m, cos)
    if kind == "arcface":
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
        shifted = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        shifted = torch.where(cos > math.cos(math.pi - m), shifted, cos - math.sin(math.pi - m) * m)
        return s * torch.where(target, shifted, cos)
    if kind == "circle":
        a_p = (1.0 + m - cos.detach()).clamp_min(0.0)
        a_n = (cos.detach() + m).clamp_min(0.0)
        return s * torch.where(target, a_p * (cos - (1.0 - m)), a_n * (cos - m))
    raise ValueError(f"margin kind {kind!r} is not one of {', '.join(MARGIN_LOSSES)}")


class IDLoss(nn.Module):
    """Identity loss on classifier scores: logits (softmax) or cosines (cosface / arcface / circle)."""

    def __init__(self, kind: str = "softmax", scale: float = 30.0, margin: float = 0.35, label_smooth: float = 0.1):
        super().__init__()
        if kind not in ID_LOSSES or kind == "none":
            raise ValueError(f"ID loss {kind!r} is not one of {', '.join(ID_LOSSES[:-1])}")
        self.kind, self.scale, self.margin, self.label_smooth = kind, scale, margin, label_smooth

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind != "softmax":
            scores = margin_logits(scores, labels, self.kind, self.scale, self.margin)
        return label_smooth_ce(scores, labels, self.label_smooth)

    def extra_repr(self) -> str:
        return f"{self.kind}, s={self.scale:g}, m={self.margin:g}, eps={self.label_smooth:g}"


def euclidean_matrix(x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances (clamped before the root: finite gradient at 0)."""
    sq = (x * x).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(1e-12).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss; ``soft=True`` is the soft-margin form (no margin)."""

    def __init__(self, margin: float = 0.3, soft: bool = False, normalize: bool = False):
        super().__init__()
        self.margin, self.soft, self.normalize = margin, soft, normalize

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = feat.float()
        if self.normalize:
            x = F.normalize(x, dim=1)
        d = euclidean_matrix(x)
        same = labels[:, None] == labels[None, :]
        pos = same & ~torch.eye(len(x), dtype=torch.bool, device=x.device)
        d_ap = torch.where(pos, d, torch.full_like(d, -torch.inf)).amax(1)
        d_an = torch.where(~same, d, torch.full_like(d, torch.inf)).amin(1)
        valid = pos.any(1) & (~same).any(1)
        if not valid.any():  # no triplet in this batch: a zero that keeps the graph
            return x.sum() * 0.0
        gap = d_ap[valid] - d_an[valid]
        return (F.softplus(gap) if self.soft else F.relu(gap + self.margin)).mean()

    def extra_repr(self) -> str:
        return "soft-margin" if self.soft else f"margin={self.margin:g}" + (", normalized" if self.normalize else "")


class CenterLoss(nn.Module):
    """Mean squared distance of each feature to its identity's center (the centers are learnt)."""

    def __init__(self, num_classes: int, feat_dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        diff = feat.float() - self.centers[labels.long()].float()
        return (diff * diff).sum(1).mean()


class ReIDCriterion(nn.Module):
    """``loss, parts = crit(out, labels)`` with ``out`` the ReID head's dict: ``logits`` (ID loss),
    ``feat`` (pre-BN: triplet, center). ``parts`` holds each term's unweighted detached value."""

    def __init__(self, terms: list[tuple[str, float, nn.Module]]):
        super().__init__()
        if not terms:
            raise ConfigError("REID: every loss is off (ID_LOSS none, TRIPLET none, CENTER_WEIGHT 0); enable one")
        self.names = [n for n, _, _ in terms]
        self.weights = [float(w) for _, w, _ in terms]
        self.terms = nn.ModuleList([t for _, _, t in terms])

    def forward(self, out: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = out["feat"].new_zeros((), dtype=torch.float32)
        parts = {}
        for name, w, term in zip(self.names, self.weights, self.terms):
            value = term(out["logits"] if name == "id" else out["feat"], labels)
            total = total + w * value
            parts[name] = value.detach()
        return total, parts


def _choice(node, key: str, allowed: tuple[str, ...]) -> str:
    value = str(node.get(key, allowed[0]))
    if value not in allowed:
        raise ConfigError(f"REID.{key} = {value!r} is not one of {', '.join(allowed)}")
    return value


def build_reid_losses(node, num_classes: int, feat_dim: int) -> ReIDCriterion:
    """``cfg.REID`` -> the weighted ID + triplet + center criterion (see configs/default.py)."""
    if num_classes < 2:
        raise ConfigError(f"ReID training needs at least 2 training identities, got {num_classes}")
    terms: list[tuple[str, float, nn.Module]] = []
    kind = _choice(node, "ID_LOSS", ID_LOSSES)
    if kind != "none" and node.ID_WEIGHT > 0:
        terms.append(("id", node.ID_WEIGHT, IDLoss(kind, node.SCALE, node.MARGIN, node.LABEL_SMOOTH)))
    trip = _choice(node, "TRIPLET", TRIPLETS)
    if trip != "none" and node.TRIPLET_WEIGHT > 0:
        terms.append(("triplet", node.TRIPLET_WEIGHT,
                      TripletLoss(node.TRIPLET_MARGIN, soft=trip == "soft", normalize=node.TRIPLET_NORM)))
    if node.CENTER_WEIGHT > 0:
        terms.append(("center", node.CENTER_WEIGHT, CenterLoss(num_classes, feat_dim)))
    return ReIDCriterion(terms)
