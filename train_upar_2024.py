"""Training script of the C2T-Net layout: ``python train_upar_2024.py --config-file CONFIG [KEY VALUE ...]``.

The same as ``run.py --mode train``; the work is done by ``tools.engine.Trainer`` (training) and
``tools.evaluation.evaluator.evaluate`` (``--mode eval``).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    from run import cli

    if "--mode" not in sys.argv:
        sys.argv[1:1] = ["--mode", "train"]
    sys.exit(cli())
