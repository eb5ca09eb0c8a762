"""cfg -> PARModel (TASK par) or ReIDModel (TASK reid / multitask) with the fine-tuning mode applied."""
from __future__ import annotations

import logging

from yacs.config import CfgNode as CN

from models.freeze import apply_finetune_mode
from models.par_model import PARModel
from models.registry import create_backbone
from models.reid_head import build_reid_head
from models.reid_model import ReIDModel

log = logging.getLogger(__name__)


def build_model(cfg: CN, num_attrs: int, num_ids: int = 0) -> PARModel | ReIDModel:
    """TASK par: PARModel; reid / multitask: ReIDModel (``num_ids`` identity classes; reid: no attribute head)."""
    if cfg.get("TASK", "par") != "par":
        return build_reid_model(cfg, num_attrs, num_ids)
    model = PARModel(create_backbone(cfg), num_attrs, cfg.MODEL.HEAD_BN, cfg.MODEL.HEAD)
    apply_finetune_mode(model, cfg.FINETUNE.MODE, cfg.FINETUNE.TRAIN_TA)
    return model


def build_reid_model(cfg: CN, num_attrs: int, num_ids: int) -> ReIDModel:
    backbone = create_backbone(cfg)
    head = build_reid_head(cfg, backbone.out_dim, num_ids)
    model = ReIDModel(backbone, head, num_attrs if cfg.TASK == "multitask" else 0, cfg.MODEL.HEAD_BN)
    apply_finetune_mode(model, cfg.FINETUNE.MODE, cfg.FINETUNE.TRAIN_TA)
    return model
