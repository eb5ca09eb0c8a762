"""The seed layout's engine entry, kept so ``from batch_engine import train_one_epoch`` still works.

The step loop lives in ``tools.engine.loop`` (one training epoch over any ``EpochTask``), the
evaluation pass in ``tools.evaluation.forward``; library code imports them from there, never from here.
"""
from tools.device import autocast
from tools.engine.loop import (EpochOptions, EpochResult, EpochTally, ModelEma, NonFiniteLoss, StepOptions,
                               StopRequest, run_epoch, train_one_epoch)
from tools.evaluation.forward import validate

__all__ = ["EpochOptions", "EpochResult", "EpochTally", "ModelEma", "NonFiniteLoss", "StepOptions", "StopRequest",
           "autocast", "run_epoch", "train_one_epoch", "validate"]
