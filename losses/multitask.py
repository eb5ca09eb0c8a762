"""The criterion of TASK reid / multitask: ``loss, parts = crit(model_output, targets)``.

``model_output`` is ``models.reid_model.ReIDModel``'s dict, ``targets`` the ReID batch loader's
``{"attrs": (B, A) labels, "ids": (B,) identity classes}``. The total is
    REID.TASK_WEIGHT * (ID + triplet + center, ``losses.reid``) + REID.ATTR_WEIGHT * (the LOSS.* stack)
with the attribute term only for multitask. REID.TASK_WEIGHTING gradnorm multiplies the two weighted
task losses by GradNorm weights (two tasks, sum 2, on the backbone's last shared layer; ``losses.gradnorm``),
logged as ``w_reid`` / ``w_attr``. ``parts`` names each ReID term (``id``, ``triplet``, ``center``), the attribute stack's
terms under their own names, and the two task totals ``reid`` / ``attr`` (multitask).

The center loss's centers are not in the model's optimiser: as in Bag of Tricks (a separate SGD at
lr 0.5 on the unweighted center loss), each training forward moves them by REID.CENTER_LR times
the gradient of the center loss at this batch's (detached) features, averaged over DDP ranks. Plain
SGD keeps no state, so the centers in the criterion's state dict are all a resume needs.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from losses.gradnorm import GradNormWeights
from losses.reid import CenterLoss, ReIDCriterion, build_reid_losses
from losses.stack import LossStack


class TaskCriterion(nn.Module):
    def __init__(self, reid: ReIDCriterion, attrs: LossStack | None = None, *, reid_weight: float = 1.0,
                 attr_weight: float = 1.0, center_lr: float = 0.5, task_weights: GradNormWeights | None = None):
        super().__init__()
        self.reid, self.attrs, self.task_weights = reid, attrs, task_weights
        self.reid_weight, self.attr_weight, self.center_lr = float(reid_weight), float(attr_weight), float(center_lr)
        if self.center is not None:
            self.center.centers.requires_grad_(False)  # moved here, not by the model's optimiser

    @property
    def center(self) -> CenterLoss | None:
        return next((t for t in self.reid.terms if isinstance(t, CenterLoss)), None)

    # the inference contract reads these from the criterion (post-hoc logit adjustment of the attributes)
    @property
    def la_mode(self) -> str:
        return self.attrs.la_mode if self.attrs is not None else "none"

    @property
    def la_tau(self) -> float:
        return self.attrs.la_tau if self.attrs is not None else 0.0

    @property
    def priors(self) -> torch.Tensor:
        return self.attrs.priors if self.attrs is not None else torch.zeros(0)

    def forward(self, out: dict, targets: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids = targets["ids"]
        reid, parts = self.reid(out, ids)
        total = self.reid_weight * reid
        if self.attrs is not None:
            attr, attr_parts = self.attrs(out["attrs"], targets["attrs"])
            parts = {**parts, **attr_parts, "reid": reid.detach(), "attr": attr.detach()}
            if self.task_weights is None:
                total = total + self.attr_weight * attr
            else:
                losses = torch.stack([self.reid_weight * reid, self.attr_weight * attr.to(reid.dtype)])
                w = self.task_weights(losses)
                total = (w * losses).sum()
                parts.update(w_reid=w[0], w_attr=w[1])
        if self.center is not None and self.training and torch.is_grad_enabled():
            self._step_centers(out["feat"], ids)
        return total, parts

    def _step_centers(self, feat: torch.Tensor, ids: torch.Tensor) -> None:
        """One SGD step of the centers on the center loss of this batch (see the module note)."""
        centers = self.center.centers
        with torch.enable_grad(), torch.autocast(device_type=feat.device.type, enabled=False):
            c = centers.detach().requires_grad_()
            diff = feat.detach().float() - c[ids.long()].float()
            (grad,) = torch.autograd.grad((diff * diff).sum(1).mean(), c)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(grad)
            grad /= dist.get_world_size()
        if bool(torch.isfinite(grad).all()):  # an overflowing batch must not poison the centers
            with torch.no_grad():
                centers.sub_(self.center_lr * grad.to(centers.dtype))

    def on_validation_end(self, pos_recall, neg_recall) -> None:
        """The attribute stack's logit update (LOSS.LOGIT_UPDATE) reads each validation's recalls."""
        if self.attrs is not None:
            self.attrs.on_validation_end(pos_recall, neg_recall)

    def extra_repr(self) -> str:
        return (f"reid_weight={self.reid_weight:g}, attr_weight={self.attr_weight:g}, center_lr={self.center_lr:g}, "
                f"task_weighting={'gradnorm' if self.task_weights is not None else 'fixed'}")


def build_task_loss(cfg, num_ids: int, feat_dim: int, attrs: LossStack | None = None,
                    model: nn.Module | None = None) -> TaskCriterion:
    """``cfg.REID`` (and, multitask, the attribute stack built from ``cfg.LOSS``) -> the criterion; ``model``
    (its ``shared_params()``) is needed for REID.TASK_WEIGHTING gradnorm."""
    reid = build_reid_losses(cfg.REID, num_ids, feat_dim)
    multi = cfg.TASK == "multitask"
    task_weights = None
    if multi and cfg.REID.TASK_WEIGHTING == "gradnorm":
        if model is None:
            raise ValueError("REID.TASK_WEIGHTING gradnorm needs the model (its shared_params())")
        task_weights = GradNormWeights(2, model.shared_params, alpha=cfg.REID.GRADNORM_ALPHA, lr=cfg.REID.GRADNORM_LR)
        task_weights.shared_trainable()  # FINETUNE.MODE head freezes it: say so now, not at the first step
    return TaskCriterion(reid, attrs if multi else None, reid_weight=cfg.REID.TASK_WEIGHT if multi else 1.0,
                         attr_weight=cfg.REID.ATTR_WEIGHT, center_lr=cfg.REID.CENTER_LR, task_weights=task_weights)
