"""Attribute-combination retrieval (UPAR challenge task 2) of a checkpoint on a split.

    uv run python -m scripts.retrieval_eval --config-file configs/native_lite.yaml [TEST.SPLIT test] \
        [SEARCH.RETRIEVAL_ATTRS "[upper_colour, lower_colour, Gender_female]"]

Queries = the distinct attribute combinations of the split (over SEARCH.RETRIEVAL_ATTRS), gallery =
its images ranked by the joint probability of the combination, relevance = exact match; under
SEARCH.RETRIEVAL_PROTOCOL upar (default) every attribute is one binary term (UPAR's colours are not
exclusive). Unknown labels are handled per term and the counts of what is left out are printed. The
probabilities are ``--mode eval``'s (the checkpoint's inference contract); prints mAP and rank-1/5/10
and writes ``retrieval_<split>.json`` into the experiment folder.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from configs.errors import exit_code_of


def exclusion_line(m: dict, protocol: str) -> str:
    """What the retrieval left out, in one line (nothing is dropped silently)."""
    ill = "" if protocol == "upar" else f"; {m['retrieval_ill_defined']} with an exclusive group not exactly one member on"
    return (f"  {m['retrieval_images_with_unknown']} image(s) with an undefined term (unknown label{ill}) define no "
            f"query and are left out only of the queries their known terms match ({m['retrieval_excluded_mean']:.1f} "
            "images per query on average); no other image is left out")


def retrieval_eval(cfg) -> dict:
    """Run the checkpoint on TEST.SPLIT and score attribute retrieval on it."""
    import numpy as np

    from tools.checkpoint import load_checkpoint
    from tools.evaluation.evaluator import evaluate
    from tools.evaluation.retrieval import retrieval_metrics
    from tools.inference import experiment_dir
    from tools.results import write_json

    out = evaluate(cfg)  # the contract's probabilities on TEST.SPLIT, saved per image
    split = cfg.TEST.SPLIT
    z = np.load(experiment_dir(cfg) / f"eval_{split}_predictions.npz")
    groups = load_checkpoint(out["checkpoint"], trusted=cfg.RELOAD.TRUSTED).get("groups") or []
    m = retrieval_metrics(z["probs"], z["labels"], list(z["attr_names"]), groups,
                          subset=list(cfg.SEARCH.RETRIEVAL_ATTRS) or None, protocol=cfg.SEARCH.RETRIEVAL_PROTOCOL)
    write_json(experiment_dir(cfg) / f"retrieval_{split}.json", {"checkpoint": out["checkpoint"], "split": split, **m})
    print(f"{split}: retrieval mAP {m['retrieval_mAP']:.4f}, rank-1 {m['retrieval_rank1']:.4f}, rank-5 "
          f"{m['retrieval_rank5']:.4f}, rank-10 {m['retrieval_rank10']:.4f} ({m['retrieval_queries']} queries, "
          f"{m['retrieval_gallery']} images, protocol {cfg.SEARCH.RETRIEVAL_PROTOCOL})")
    print(exclusion_line(m, cfg.SEARCH.RETRIEVAL_PROTOCOL))
    return m


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Attribute-combination retrieval metrics of a checkpoint")
    ap.add_argument("--config-file", "--config", dest="config_file", required=True, help="experiment YAML")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. TEST.SPLIT val")
    a = ap.parse_args(argv)
    from configs.loader import load_config

    return retrieval_eval(load_config(a.config_file, [*a.opts, "MODE", "eval"]))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(exit_code_of(main))
