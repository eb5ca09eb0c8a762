"""C2T-Net: Swin/CNN spatial branch + TA blocks, ViT/EVA branch, cross-fusion (presets c2t_base/small/lite)."""
from models.c2t.c2tnet import PRESETS, C2TNet, build_c2t  # noqa: F401  (importing registers the presets)

__all__ = ["C2TNet", "PRESETS", "build_c2t"]
