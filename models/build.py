"""cfg -> PARModel with the fine-tuning mode applied."""
from __future__ import annotations

import logging

from yacs.config import CfgNode as CN

from models.freeze import apply_finetune_mode
from models.par_model import PARModel
from models.registry import create_backbone

log = logging.getLogger(__name__)


def build_model(cfg: CN, num_attrs: int) -> PARModel:
    model = PARModel(create_backbone(cfg), num_attrs, cfg.MODEL.HEAD_BN, cfg.MODEL.HEAD)
    apply_finetune_mode(model, cfg.FINETUNE.MODE, cfg.FINETUNE.TRAIN_TA)
    return model
