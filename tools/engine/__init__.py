"""Training engine: the step loop (``loop``), the Trainer with its build steps, hooks and state, stage 2, and the
run's building blocks; ``run_training(cfg)`` picks the trainer for a config."""
from tools.engine.build import build_optimizer, build_scheduler, reload_weights, seed_everything
from tools.engine.hooks import HookBase, default_hooks
from tools.engine.launch import run_training, trainer_for
from tools.engine.reid import ReIDTrainer
from tools.engine.stage2 import Stage2Trainer
from tools.engine.trainer import ExperimentExists, Trainer, TrainState

__all__ = ["ExperimentExists", "HookBase", "ReIDTrainer", "Stage2Trainer", "TrainState", "Trainer",
           "build_optimizer", "build_scheduler", "default_hooks", "reload_weights", "run_training",
           "seed_everything", "trainer_for"]
