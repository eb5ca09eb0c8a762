"""Models: a registry of backbones, the PAR model (backbone + head), fine-tuning modes."""
import os

# timm/huggingface must never try the network: a hub download hangs on offline machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import models.c2t  # noqa: E402,F401  (registers c2t_base, c2t_small, c2t_lite)
import models.timm_backbone  # noqa: E402,F401  (registers "timm")
from models.build import build_model  # noqa: E402
from models.par_model import PARModel  # noqa: E402
from models.registry import create_backbone, list_models, register_model  # noqa: E402

__all__ = ["PARModel", "build_model", "create_backbone", "list_models", "register_model"]
