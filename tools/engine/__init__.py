"""Training engine: the Trainer, its hooks and state, and the run's building blocks."""
from tools.engine.build import build_optimizer, build_scheduler, reload_weights, seed_everything
from tools.engine.hooks import HookBase, default_hooks
from tools.engine.launch import run_training, trainer_for
from tools.engine.reid import ReIDTrainer, run_reid_training
from tools.engine.stage2 import Stage2Trainer
from tools.engine.trainer import ExperimentExists, Trainer, TrainState

__all__ = ["ExperimentExists", "HookBase", "ReIDTrainer", "Stage2Trainer", "TrainState", "Trainer",
           "build_optimizer", "build_scheduler", "default_hooks", "reload_weights", "run_reid_training",
           "run_training", "seed_everything", "trainer_for"]
