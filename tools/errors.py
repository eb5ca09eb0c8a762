"""The exception types that mean 'the user's input is wrong' (printed as one line by run.py)."""
from __future__ import annotations


def _collect() -> tuple[type[BaseException], ...]:
    from batch_engine import NonFiniteLoss
    from configs.loader import ConfigError
    from dataset.base import DataError
    from models.pretrained import WeightsError
    from tools.checkpoint import CheckpointError
    from train_upar_2024 import ExperimentExists

    errors: list[type[BaseException]] = [ConfigError, DataError, WeightsError, CheckpointError, ExperimentExists,
                                         NonFiniteLoss, MemoryError]
    try:
        from tools.video.errors import VideoError

        errors.append(VideoError)
    except ImportError:
        pass
    return tuple(errors)


USER_ERRORS = _collect()
