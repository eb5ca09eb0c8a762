"""C2T-Net (Bui, Le, Ngo; WACV 2024 workshops): a spatial branch with TA blocks, a transformer
branch, and cross-fusion of the two. Presets, registered as ``MODEL.NAME``:

==========  ===============================  =======================  ==========================
preset      spatial branch (MODEL.BACKBONE)  transformer (MODEL.VIT)  note
==========  ===============================  =======================  ==========================
c2t_base    swin_base_patch4_window7_224     eva_large_patch14_196    the original, ~412 M params
c2t_small   swin_tiny_patch4_window7_224     eva02_tiny_patch14_224   Swin/EVA pair, ~47 M
c2t_lite    efficientnet_lite0               vit_tiny_patch16_224     trains on a CPU, ~23 M
==========  ===============================  =======================  ==========================

(Counts at 256x128; 13.4 M of each are TA blocks, whose size grows with the square of the
positions of the stride-4 map: 2048 at 256x128. A CNN spatial branch gets TA blocks on the maps
it hands from its stride-4, -8 and -16 stages to the next.)

How a preset and the config combine: the preset names the two branches; ``MODEL.BACKBONE`` /
``MODEL.VIT`` left empty (the schema default) keep them, and a name set there (in the YAML, its
``_BASE_`` or the command line) replaces them, with a logged warning that says so. Every other key is read as is: ``MODEL.PRETRAINED`` (spatial weights: a local
file, ``package:efficientnet-lite0``, or ``none``), ``MODEL.VIT_PRETRAINED``, ``MODEL.FUSION_DIM``
(0 = the transformer's width), ``MODEL.FUSION_HEADS``, ``MODEL.TA_BLOCKS``, ``MODEL.TA_FAITHFUL``,
``MODEL.DROP_PATH`` (the original trained with 0) and ``DATASET.HEIGHT/WIDTH`` (the input size the
TA blocks and position embeddings are built for). Weights are never a preset default: a branch
whose key is ``none`` starts from random weights, with a loud warning.

Parameter groups (the one definition used by the fine-tuning modes): ``spatial`` (the spatial
branch), ``ta`` (the TA blocks), ``vit`` (the transformer branch), ``fusion`` (cross-attention
blocks, their two LayerNorms, width projections); ``PARModel`` adds ``head``.

Parameters that are dead in the original (they never reach the output: Swin's ``norm0-2`` and
EVA's pooled-feature ``fc_norm``, 3,840 values in c2t_base) are not built; ``models.c2t.convert``
drops them from original checkpoints and writes them back as identity LayerNorms.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import timm
import torch
from torch import nn
from yacs.config import CfgNode as CN

from configs.errors import ConfigError
from models.c2t.cross_fusion import CrossFusion
from models.c2t.swin_branch import SwinBranch, build_spatial_branch
from models.c2t.swin_mmcv import is_mmcv_swin, mmcv_swin_to_timm
from models.c2t.ta_block import TABlock
from models.pretrained import (
    IMAGENET,
    Preprocessing,
    HEAD_PREFIXES,
    WeightsError,
    is_none,
    load_checked,
    load_timm_weights,
    package_weights,
    preprocessing_of,
    read_state_dict,
    swin_state_to_timm,
)
from models.registry import register_model

log = logging.getLogger(__name__)

GROUPS = ("spatial", "ta", "vit", "fusion")


@dataclass(frozen=True)
class Preset:
    backbone: str  # spatial branch (timm name)
    vit: str  # transformer branch (timm name)


PRESETS = {
    "c2t_base": Preset("swin_base_patch4_window7_224", "eva_large_patch14_196"),
    "c2t_small": Preset("swin_tiny_patch4_window7_224", "eva02_tiny_patch14_224"),
    "c2t_lite": Preset("efficientnet_lite0", "vit_tiny_patch16_224"),
}


def _needs_grad(*modules: nn.Module) -> bool:
    return any(p.requires_grad for m in modules for p in m.parameters())


def build_vit_branch(name: str, img_size: tuple[int, int], drop_path: float) -> nn.Module:
    kwargs = {"drop_path_rate": drop_path} if drop_path else {}
    try:
        vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, **kwargs)
    except TypeError:
        raise ValueError(f"MODEL.VIT = {name}: the transformer branch must be a ViT-style timm model that "
                         "takes img_size (e.g. eva_large_patch14_196, vit_tiny_patch16_224)") from None
    except RuntimeError as e:
        raise ValueError(f"MODEL.VIT = {name}: {e}; use a timm model name") from None
    if getattr(vit, "cls_token", None) is None or getattr(vit, "num_prefix_tokens", 0) < 1:
        raise ValueError(f"MODEL.VIT = {name} has no class token; the cross-fusion queries with it, "
                         "choose a ViT/EVA with a class token")
    return vit


class C2TNet(nn.Module):
    """``forward(x)`` on a normalised (B, 3, H, W) batch -> (B, 2 * fusion_dim) features."""

    def __init__(self, spatial: str, vit: str, img_size: tuple[int, int], *, fusion_dim: int = 0,
                 fusion_heads: int = 8, ta_blocks: bool = True, ta_faithful: bool = True,
                 drop_path: float = 0.0):
        super().__init__()
        self.names = (spatial, vit)
        self.img_size = tuple(img_size)
        self.spatial = build_spatial_branch(spatial, self.img_size, drop_path)
        self.ta_blocks = nn.ModuleList(
            [TABlock(n, faithful=ta_faithful) for _, n in self.spatial.ta_shapes] if ta_blocks else [])
        self.vit = build_vit_branch(vit, self.img_size, drop_path)
        # forward_features never uses the pooled-feature norm: drop it (dead, and DDP dislikes unused params)
        fc_norm = getattr(self.vit, "fc_norm", None)
        self.vit_fc_norm_dim = fc_norm.normalized_shape[0] if isinstance(fc_norm, nn.LayerNorm) else None
        if fc_norm is not None:
            self.vit.fc_norm = nn.Identity()
        vit_dim = self.vit.num_features
        dim = fusion_dim or vit_dim
        self.fusion = CrossFusion(self.spatial.out_dim, vit_dim, dim, fusion_heads)
        self.out_dim = self.fusion.out_dim
        self.preprocessing: Preprocessing = IMAGENET  # the spatial weights' (``load_spatial_weights``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Fully frozen branches run without autograd: no activations kept for a backward they don't need.
        grad = torch.is_grad_enabled()
        upstream = grad and x.requires_grad
        vit_grad = upstream or (grad and _needs_grad(self.vit))
        spatial_grad = upstream or (grad and _needs_grad(self.spatial, self.ta_blocks))
        with torch.set_grad_enabled(vit_grad):
            tokens = self.vit.forward_features(x)
        with torch.set_grad_enabled(spatial_grad):
            fmap = self.spatial(x, self.ta_blocks)
        with torch.set_grad_enabled(vit_grad or spatial_grad or (grad and _needs_grad(self.fusion))):
            return self.fusion(fmap, tokens, self.vit.num_prefix_tokens)

    def param_groups(self) -> dict[str, list[nn.Module]]:
        return {"spatial": [self.spatial], "ta": [self.ta_blocks], "vit": [self.vit], "fusion": [self.fusion]}

    def shared_params(self) -> list[nn.Parameter]:
        """The two fusion LayerNorms: the last shared layer before the head (GradNorm's W)."""
        return [*self.fusion.norm_spatial.parameters(), *self.fusion.norm_vit.parameters()]

    def group_counts(self) -> dict[str, int]:
        return {g: sum(p.numel() for m in mods for p in m.parameters()) for g, mods in self.param_groups().items()}

    # ------------------------------------------------------------------------- weights
    def load_spatial_weights(self, path: str, key: str = "MODEL.PRETRAINED") -> None:
        """Spatial-branch weights: timm format, the Microsoft Swin release, mmcv/mmseg Swin
        (``stages.*``), or ``package:efficientnet-lite0`` (which also sets the input normalisation)."""
        if not isinstance(self.spatial, SwinBranch):
            if load_timm_weights(self.spatial.model, path, key) and package_weights(path):
                self.preprocessing = preprocessing_of(path)
                log.info("%s = %s: input normalised as (x - 0.5) / 0.5, as these weights expect", key, path)
            return
        if package_weights(path):
            raise WeightsError(f"{key} = {path!r} fits only timm's {package_weights(path).timm_name}, not "
                               f"{self.names[0]}; change MODEL.BACKBONE or {key}")
        if is_none(path):
            log.warning("%s = none: the spatial branch %s starts from RANDOM weights (set %s to a local "
                        "weight file to fine-tune)", key, self.names[0], key)
            return
        state = read_state_dict(path, key)
        if is_mmcv_swin(state):
            state = mmcv_swin_to_timm(state)
        load_checked(self.spatial, swin_state_to_timm(state, self.spatial), key, path, HEAD_PREFIXES)

    def load_vit_weights(self, path: str, key: str = "MODEL.VIT_PRETRAINED") -> None:
        load_timm_weights(self.vit, path, key)


def _branch(preset: str, key: str, given: str, default: str) -> str:
    if not given or given == default:
        return default
    log.warning("%s = %s (set by the config, its _BASE_ or the command line) replaces the %s preset's %s; "
                "set %s '' to use the preset's", key, given, preset, default, key)
    return given


def resolve_branches(cfg: CN, preset: str) -> tuple[str, str]:
    """(spatial, transformer) timm names: the preset's, unless the config names its own (logged)."""
    p = PRESETS[preset]
    spatial = _branch(preset, "MODEL.BACKBONE", cfg.MODEL.BACKBONE, p.backbone)
    vit = _branch(preset, "MODEL.VIT", cfg.MODEL.VIT, p.vit)
    pkg = package_weights(cfg.MODEL.PRETRAINED)
    if pkg is not None and spatial != pkg.timm_name:
        origin = "the preset's" if spatial == p.backbone else "set by the config, its _BASE_ or the command line"
        raise ConfigError(f"MODEL.PRETRAINED = {cfg.MODEL.PRETRAINED} fits only {pkg.timm_name}, but the spatial "
                          f"branch is MODEL.BACKBONE = {spatial} ({origin}); set MODEL.BACKBONE '' (the {preset} "
                          f"preset's {p.backbone}) or {pkg.timm_name}, or change MODEL.PRETRAINED")
    return spatial, vit


def build_c2t(cfg: CN, preset: str) -> C2TNet:
    spatial, vit = resolve_branches(cfg, preset)
    m = cfg.MODEL
    model = C2TNet(spatial, vit, (cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH), fusion_dim=m.FUSION_DIM,
                   fusion_heads=m.FUSION_HEADS, ta_blocks=m.TA_BLOCKS, ta_faithful=m.TA_FAITHFUL, drop_path=m.DROP_PATH)
    model.load_spatial_weights(m.PRETRAINED)
    model.load_vit_weights(m.VIT_PRETRAINED)
    counts = model.group_counts()
    log.info("%s: %s + %s at %dx%d, fusion width %d; parameters per group: %s; total %s", preset, spatial, vit,
             *model.img_size, model.fusion.dim, ", ".join(f"{g} {n:,}" for g, n in counts.items()),
             f"{sum(counts.values()):,}")
    return model


@register_model("c2t_base")
def c2t_base(cfg: CN) -> C2TNet:
    """The original C2T-Net: Swin-B + EVA-L (~412 M parameters)."""
    return build_c2t(cfg, "c2t_base")


@register_model("c2t_small")
def c2t_small(cfg: CN) -> C2TNet:
    """Swin-T + EVA02-Tiny."""
    return build_c2t(cfg, "c2t_small")


@register_model("c2t_lite")
def c2t_lite(cfg: CN) -> C2TNet:
    """EfficientNet-Lite0 + ViT-Tiny: trains on a CPU."""
    return build_c2t(cfg, "c2t_lite")
