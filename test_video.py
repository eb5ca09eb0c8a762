"""Video entry of the C2T-Net layout: ``python test_video.py --config-file CONFIG [--mode video|predict] [KEY VALUE ...]``.

The same as ``run.py --mode video`` (the default here) or ``--mode predict``, with run.py's error policy;
the work is done by ``cctv.app`` (detector + tracker + PAR per person, report, footage index).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    from run import cli

    if "--mode" not in sys.argv:
        sys.argv[1:1] = ["--mode", "video"]
    sys.exit(cli())
