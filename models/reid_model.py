"""TASK reid / multitask: one backbone, the ReID embedding head (BNNeck, GeM / avg) and, for
multitask, the attribute head beside it.

``forward(x)`` returns a dict in training and in eval mode alike: ``feat`` (pooled, pre-BN: triplet /
center loss), ``bn_feat`` (post-BN: the retrieval embedding), ``logits`` (identity scores, when an ID
loss is on) and, multitask, ``attrs`` ((B, A) attribute logits, on the pooled feature as PARModel's
head sees it). ``embed(x)`` is the inference embedding alone, ``forward_attrs(x)`` the attribute
logits alone. Inputs are RGB in [0, 1]; the backbone's normalisation lives here, as in PARModel.
"""
from __future__ import annotations

import torch
from torch import nn

from models.par_model import ClassifierHead, InputNormalisation
from models.reid_head import ReIDHead, backbone_map
from models.tta import unwrapped

CLASSIFIER_KEY = "reid_head.classifier.weight"  # its rows = the training identities


class ReIDModel(InputNormalisation):
    def __init__(self, backbone: nn.Module, reid_head: ReIDHead, num_attrs: int = 0, head_bn: bool = False):
        super().__init__()
        self.backbone = backbone
        self.reid_head = reid_head
        self.head = ClassifierHead(backbone.out_dim, num_attrs, head_bn) if num_attrs else None
        self.num_attrs = num_attrs
        self.embed_dim = reid_head.out_dim
        self._register_normalisation(backbone)

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's spatial map (GeM needs it) or its pooled feature."""
        return backbone_map(self.backbone, self.normalise(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.reid_head(self._map(x))
        if out["logits"] is None:  # no ID loss: no classifier (and no None in a DDP output)
            del out["logits"]
        if self.head is not None:
            out["attrs"] = self.head(out["feat"])
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, D) retrieval embedding (post-BNNeck)."""
        return self.reid_head.embed(self._map(x))

    def forward_attrs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, A) attribute logits (multitask)."""
        return self._attrs(self._map(x))

    def attrs_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) attribute logits and (B, D) embedding from one backbone pass (multitask video crops)."""
        fmap = self._map(x)
        return self._attrs(fmap), self.reid_head.embed(fmap)

    def _attrs(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise TypeError("forward_attrs needs TASK multitask (an attribute head)")
        return self.head(self.reid_head.pooled(fmap))

    def shared_params(self) -> list[nn.Parameter]:
        """The last layer both tasks share (GradNorm across the tasks, REID.TASK_WEIGHTING gradnorm)."""
        return list(self.backbone.shared_params())

    def param_groups(self) -> dict[str, list[nn.Module]]:
        """The backbone's groups, then ``head``: both heads are new layers (LR_NEW, trained by FINETUNE.MODE head)."""
        heads = [self.reid_head] + ([self.head] if self.head is not None else [])
        return {**self.backbone.param_groups(), "head": heads}


def identity_classes(state: dict) -> int:
    """How many identities a saved ReIDModel's classifier has (0: none), to rebuild it for inference."""
    for k, v in state.items():
        if k.split("module.")[-1].split("_orig_mod.")[-1] == CLASSIFIER_KEY:
            return int(v.shape[0])
    return 0


class AttributeView(nn.Module):
    """A multitask ReIDModel seen as a PAR model: ``forward`` gives the attribute logits (evaluation)."""

    def __init__(self, model: ReIDModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_attrs(x)


def attribute_view(model: nn.Module) -> nn.Module:
    """``model`` itself (PAR), or its attribute view (multitask, flip-averaged or not), for code that expects
    attribute logits."""
    return AttributeView(model) if isinstance(unwrapped(model), ReIDModel) else model
