"""Run the whole experiment table with one command, then print its summary.

    uv run python -m scripts.run_experiments --base configs/native_lite.yaml --seeds 0 1 2
    uv run python -m scripts.run_experiments --only baseline focal TRAIN.MAX_EPOCH 5

Every ``configs/experiments/*.yaml`` (or those named by ``--only``) runs once with the first seed
(same seed and same data split for every row). The rows named by ``--seed-rows`` (default: the
baseline; ``all``: every row) also run with the other seeds, as ``<row>_seed<k>``, to measure
seed-to-seed noise; ``scripts.summarize`` groups them back into one row (mean ± std) and pairs seed k
of a row with seed k of the baseline for the bootstrap interval of Δ test mA. For example:

    uv run python -m scripts.run_experiments --base configs/native_lite_table.yaml --seeds 0 1 2 --seed-rows all

The runs go seed by seed (every row at the first seed, then every row at the next), so a table stopped
early has whole columns. ``--shard I/N`` runs every N-th of them, from the I-th: N processes side by
side (one per core or GPU, e.g. ``OMP_NUM_THREADS=1 ... --shard 0/2`` and ``--shard 1/2``) share one table.

``--base`` puts each experiment's own keys on
top of another preset instead of its ``_BASE_`` (e.g. the CPU lite preset); trailing KEY VALUE
pairs override everything. A failing row is reported and the others still run.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

from configs.errors import exit_code_of

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiments"
BASELINE = "baseline"
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")  # TRAIN.MAX_EPOCH, SEED ...


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Options | KEY VALUE overrides: the overrides start after '--' or at the first config key."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    for i, a in enumerate(argv):
        if CONFIG_KEY.match(a):
            return argv[:i], argv[i:]
    return argv, []


def experiment_files(only: list[str] | None) -> list[Path]:
    files = sorted(EXPERIMENTS.glob("*.yaml"))
    if not only:
        return files
    by_name = {p.stem: p for p in files}
    out = []
    for item in only:
        path = Path(item)
        if path.suffix == ".yaml" and path.is_file():
            out.append(path)
        elif item in by_name:
            out.append(by_name[item])
        else:
            raise SystemExit(f"error: --only {item!r} is neither a YAML file nor one of: {', '.join(by_name)}")
    return out


def plan(files: list[Path], seeds: list[int] | None, base: str | None, opts: list[str], *,
         seed_rows: list[str] | None = None) -> list:
    """(label, cfg) for every run: each file at the first seed, the ``seed_rows`` (file stems, or
    'all'; default the baseline) at the other seeds too, named ``<NAME>_seed<k>``."""
    from configs import load_config

    rows = set(seed_rows or [BASELINE])
    unknown = set(seed_rows or []) - {p.stem for p in files} - {"all"}  # the default may be absent (--only)
    if unknown:
        raise SystemExit(f"error: --seed-rows {' '.join(sorted(unknown))}: not among the rows that run "
                         f"({', '.join(p.stem for p in files)})")
    first = ["SEED", str(seeds[0])] if seeds else []
    runs = [(cfg.NAME, cfg) for cfg in (load_config(path, [*opts, *first], base=base) for path in files)]
    first_runs = list(runs)
    for s in (seeds or [])[1:]:  # seed-major: a table stopped early has whole columns
        for path, (name, _) in zip(files, first_runs):
            if "all" in rows or path.stem in rows:
                runs.append((f"{name}_seed{s}",
                             load_config(path, [*opts, "SEED", str(s), "NAME", f"{name}_seed{s}"], base=base)))
    return runs


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 0/2") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text!r}: needs 0 <= I < N")
    return i, n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train every experiment of configs/experiments/, then summarize.")
    p.add_argument("--config-file", "--base", dest="base", default=None,
                   help="preset the experiments' own keys go on (default: their _BASE_)")
    p.add_argument("--only", nargs="+", default=None, help="experiment names (file stems) or YAML paths")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="first seed for every row; the --seed-rows also run with the others (noise estimate)")
    p.add_argument("--seed-rows", nargs="+", default=None, metavar="ROW",
                   help="rows (file stems) that run every seed, or 'all' (default: baseline)")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                   help="run every N-th run from the I-th (N processes share the table; default 0/1)")
    p.add_argument("--overwrite", action="store_true", help="retrain runs that already finished")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their loss stacks, train nothing")
    p.epilog = "KEY VALUE overrides for every run follow the options (or '--'), e.g. TRAIN.MAX_EPOCH 5"
    return p


def _print_plan(runs: list) -> None:
    """One line per run: its label, seed, fine-tuning mode and loss stack."""
    from losses import resolve_loss_spec

    for label, cfg in runs:
        spec = resolve_loss_spec(cfg)
        terms = " + ".join(f"{t.weight:g}*{t.name}" for t in spec.terms)
        print(f"{label:<32} seed {cfg.SEED}  finetune {cfg.FINETUNE.MODE:<7} loss {terms}"
              f"{'  sample-weight' if any(t.params.get('SAMPLE_WEIGHT') for t in spec.terms) else ''}"
              f"{'  logit-update' if spec.logit_update else ''}"
              f"{'  LA ' + spec.la_mode if spec.la_mode != 'none' else ''}")


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    options, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    args = p.parse_args(options)
    args.opts = overrides

    from configs.errors import ConfigError

    try:
        runs = plan(experiment_files(args.only), args.seeds, args.base, list(args.opts), seed_rows=args.seed_rows)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shard, shards = args.shard
    runs = runs[shard::shards]
    _print_plan(runs)
    if args.dry_run:
        return 0

    from scripts.summarize import SummaryError, summarize
    from tools.engine import ExperimentExists
    from tools.engine import run_training as train

    failed, roots = [], []
    for label, cfg in runs:
        t0 = time.perf_counter()
        root = Path(cfg.OUTPUT_DIR) / cfg.DATASET.NAME
        roots.append(root) if root not in roots else None
        try:
            exp = root / cfg.NAME
            if not args.overwrite and (exp / "last.pth").is_file() and not (exp / "summary.json").is_file():
                cfg = cfg.clone()  # a row stopped by Ctrl-C / kill: continue it rather than refuse it
                cfg.defrost()
                cfg.TRAIN.RESUME = cfg.TRAIN.RESUME or "auto"
                cfg.freeze()
            train(cfg, overwrite=args.overwrite)
            print(f"[done] {label} in {time.perf_counter() - t0:.0f}s")
        except ExperimentExists:
            print(f"[kept] {label}: already finished (pass --overwrite to retrain)")
        except KeyboardInterrupt:
            print(f"[stopped] {label}; rerun the same command to continue with the remaining runs")
            return 130
        except Exception as e:  # one broken row must not cost the rest of the table
            logging.getLogger("run_experiments").debug("details", exc_info=True)
            print(f"[failed] {label}: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(label)
    for root in roots:
        try:
            print(summarize(root))
        except SummaryError as e:
            print(f"error: {e}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
