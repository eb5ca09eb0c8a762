"""Any timm model as a PAR backbone: pooled features, one parameter group."""
from __future__ import annotations

import timm
import torch
from torch import nn
from yacs.config import CfgNode as CN

from configs.errors import ConfigError
from models.pretrained import IMAGENET, Preprocessing, load_pretrained, preprocessing_of
from models.registry import register_model


class TimmBackbone(nn.Module):
    preprocessing: Preprocessing = IMAGENET  # what the loaded weights expect (set by ``timm_backbone``)

    def __init__(self, name: str, img_size: tuple[int, int], drop_path: float = 0.0):
        super().__init__()
        kwargs = {"pretrained": False, "num_classes": 0}
        if drop_path:
            kwargs["drop_path_rate"] = drop_path
        try:  # transformers need the input size, CNNs refuse the argument
            self.model = timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError:
            self.model = timm.create_model(name, **kwargs)
        self.out_dim = self.model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def param_groups(self) -> dict[str, list[nn.Module]]:
        return {"backbone": [self.model]}

    def shared_params(self) -> list[nn.Parameter]:
        """Parameters of the last layer that holds any (GradNorm's W)."""
        last = [m for m in self.model.modules() if any(True for _ in m.parameters(recurse=False))][-1]
        return list(last.parameters(recurse=False))


@register_model("timm")
def timm_backbone(cfg: CN) -> TimmBackbone:
    if not cfg.MODEL.BACKBONE:
        raise ConfigError("MODEL.NAME timm needs MODEL.BACKBONE: a timm model name, e.g. resnet50 or "
                          "efficientnet_lite0")
    m = TimmBackbone(cfg.MODEL.BACKBONE, (cfg.DATASET.HEIGHT, cfg.DATASET.WIDTH), cfg.MODEL.DROP_PATH)
    load_pretrained(m.model, cfg.MODEL.PRETRAINED, "MODEL.PRETRAINED")
    m.preprocessing = preprocessing_of(cfg.MODEL.PRETRAINED)
    return m
