"""ReID embedding head: pooling -> BNNeck -> optional identity classifier (Luo et al., "Bag of
Tricks", 2019; fast-reid's EmbeddingHead).

  * pooling of a (B, C, H, W) map: ``avg`` or ``gem`` (generalised mean, (mean x^p)^(1/p) with a
    learnable p, Radenovic et al. 2018); a (B, D) input is already pooled (the framework's
    backbones return pooled features) and passes through;
  * BNNeck: BatchNorm1d whose bias is frozen at 0, so the classifier sees a centred, scaled
    feature while the triplet loss keeps the raw one;
  * classifier on the post-BN feature: a bias-free linear layer (``softmax`` ID loss), or cosines
    to normalised class weights (``cosine=True``, for cosface / arcface / circle).

``forward`` returns ``{"feat": pre-BN (triplet, center), "bn_feat": post-BN (inference),
"logits": (B, C) scores or None}``; ``embed`` returns the inference feature only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOLS = ("avg", "gem")


class GeM(nn.Module):
    """Generalised-mean pooling over H, W with a learnable exponent p (p = 1: average pooling)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp_min(1.0)  # p < 1 is not a mean any more
        return x.clamp_min(self.eps).pow(p).mean((2, 3)).pow(1.0 / p)


class CosineClassifier(nn.Module):
    """(B, D) -> (B, C) cosines between the feature and each class weight."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class ReIDHead(nn.Module):
    def __init__(self, in_dim: int, num_classes: int = 0, *, pool: str = "avg", gem_p: float = 3.0,
                 bnneck: bool = True, cosine: bool = False):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool = {pool!r}; use one of {', '.join(POOLS)}")
        self.pool = GeM(gem_p) if pool == "gem" else nn.AdaptiveAvgPool2d(1)
        self.out_dim = in_dim
        self.bn = nn.BatchNorm1d(in_dim) if bnneck else nn.Identity()
        if bnneck:
            nn.init.ones_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)
            self.bn.bias.requires_grad_(False)  # BNNeck: no shift, the feature stays centred for the classifier
        self.classifier: nn.Module | None = None
        if num_classes > 0:
            if cosine:
                self.classifier = CosineClassifier(in_dim, num_classes)
            else:
                self.classifier = nn.Linear(in_dim, num_classes, bias=False)
                nn.init.normal_(self.classifier.weight, std=0.001)  # BoT's init

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.pool(x).flatten(1)
        if x.dim() != 2:
            raise ValueError(f"ReID head expects (B, C, H, W) maps or (B, D) features, got {tuple(x.shape)}")
        return x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        feat = self.pooled(x)
        bn_feat = self.bn(feat)
        logits = self.classifier(bn_feat) if self.classifier is not None else None
        return {"feat": feat, "bn_feat": bn_feat, "logits": logits}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The inference embedding (post-BN), e.g. for retrieval or ONNX export."""
        return self.bn(self.pooled(x))


def backbone_map(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What to feed the head: a timm CNN's spatial map (``model.forward_features``) when it gives
    one, else the backbone's pooled (B, D) feature. GeM needs the map; average pooling of the map
    equals timm's own global pooling. ``x`` is the backbone's input (already normalised, as
    ``PARModel.forward_features`` does before calling the backbone)."""
    model = getattr(backbone, "model", None)
    if model is not None and hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        out = model.forward_features(x)
        # a transformer's tokens: timm's own pooling (no second forward pass)
        return out if torch.is_tensor(out) and out.dim() == 4 else model.forward_head(out, pre_logits=True)
    return backbone(x)


def build_reid_head(cfg, in_dim: int, num_classes: int) -> ReIDHead:
    """``cfg.REID`` -> the head; a margin ID loss (cosface / arcface / circle) gets the cosine classifier."""
    from configs import ConfigError
    from losses.reid import MARGIN_LOSSES

    r = cfg.REID
    if r.POOL not in POOLS:
        raise ConfigError(f"REID.POOL = {r.POOL!r} is not one of {', '.join(POOLS)}")
    if r.NECK not in ("bnneck", "none"):
        raise ConfigError(f"REID.NECK = {r.NECK!r} is not one of bnneck, none")
    n_cls = num_classes if r.ID_LOSS != "none" else 0
    return ReIDHead(in_dim, n_cls, pool=r.POOL, gem_p=r.GEM_P, bnneck=r.NECK == "bnneck",
                    cosine=r.ID_LOSS in MARGIN_LOSSES)
