"""Training engine: the Trainer, its hooks and state, and the run's building blocks."""
from tools.engine.build import build_optimizer, build_scheduler, reload_weights, seed_everything
from tools.engine.hooks import HookBase, default_hooks
from tools.engine.trainer import ExperimentExists, Trainer, TrainState, run_training

__all__ = ["ExperimentExists", "HookBase", "TrainState", "Trainer", "build_optimizer", "build_scheduler",
           "default_hooks", "reload_weights", "run_training", "seed_everything"]
