"""The single entry point.

    uv run run.py --config-file configs/native.yaml [--mode train|eval|video|predict|search|serve] [KEY VALUE ...]

Trailing KEY VALUE pairs override the YAML (e.g. ``TRAIN.BATCH_SIZE 32``). Under
``torchrun --nproc_per_node=N run.py ...`` training runs with DistributedDataParallel.
"""
from __future__ import annotations

import argparse
import sys

MODES = ("train", "eval", "video", "predict", "search", "serve")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Pedestrian attribute recognition: train, evaluate, run on video.")
    p.add_argument("--config-file", required=True, help="experiment YAML (may inherit with _BASE_)")
    p.add_argument("--mode", choices=MODES, default=None, help="overrides MODE from the YAML")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run of the same NAME")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. TRAIN.MAX_EPOCH 5")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Imports after argument parsing: --help stays instant.
    from configs import load_config
    from configs.preflight import preflight

    opts = list(args.opts)
    if args.mode:
        opts += ["MODE", args.mode]
    cfg = load_config(args.config_file, opts)
    preflight(cfg)  # what the config alone can show wrong, before the heavy imports and the model load
    if cfg.MODE == "train":
        from tools.engine import run_training

        run_training(cfg, overwrite=args.overwrite)
    elif cfg.MODE == "eval":
        from tools.evaluation.evaluator import evaluate

        evaluate(cfg)
    elif cfg.MODE == "search":
        from cctv.search import run_search
        from tools.results import setup_logging

        setup_logging(None, console=cfg.REDIRECTOR)  # the ranked summary line reaches the console
        run_search(cfg)
    elif cfg.MODE == "serve":
        from cctv.web.server import run_server

        run_server(cfg)
    elif cfg.MODE == "video":
        from cctv.app import process_videos

        process_videos(cfg)
    else:
        from cctv.app import predict_folder

        predict_folder(cfg)
    return 0


def cli() -> int:
    """Known user mistakes end with one line naming the problem and the fix, not a traceback."""
    from configs.errors import exit_code_of

    return exit_code_of(main)


if __name__ == "__main__":
    sys.exit(cli())
