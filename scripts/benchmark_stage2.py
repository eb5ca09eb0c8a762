"""Stage-2 (TRAIN.STAGE2) time per epoch against a plain training epoch, on the same model and data.

Every row trains one epoch of the config's train split with the real loops: ``plain`` is
``tools.engine.loop.train_one_epoch`` (the model in train mode, full backward), the others are
``Stage2Loop.run`` in their steady state (FRDL re-sampling from the banks, GOAT training and resetting
the extractor). The model is the config's with MODEL.HEAD split at random init (timing does not need
a trained stage 1). Each figure is the median of ``--epochs`` epochs after one warm-up epoch. A last
table times the bank update + draw alone, vectorised vs a Python loop over B x N (the original's way).

    uv run python scripts/benchmark_stage2.py --config-file configs/demo.yaml --epochs 3
    uv run python scripts/benchmark_stage2.py --config-file configs/native_frdl.yaml TRAIN.BATCH_SIZE 64

On a CPU shared with other jobs ``--threads 1`` gives steadier figures.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from configs import load_config  # noqa: E402
from configs.errors import exit_code_of
from dataset import build_data, build_loaders  # noqa: E402
from losses import build_loss  # noqa: E402
from models import build_model  # noqa: E402
from tools.device import setup_runtime  # noqa: E402
from tools.engine.build import build_optimizer, place_model, seed_everything  # noqa: E402
from tools.engine.label_balanced import FeatureBanks, LabelBalanced  # noqa: E402
from tools.engine.loop import EpochOptions, StepOptions, train_one_epoch  # noqa: E402
from tools.engine.stage2 import Stage2Loop, Stage2Options, stage2_optimizers  # noqa: E402

MODES = ("frdl", "goat", "frdl_goat")


def _config(args):
    opts = [o for i, o in enumerate(args.opts) if not (i == 0 and o == "--")]
    opts += ["MODEL.HEAD", "split", "RELOAD.TYPE", "False", "TRAIN.STAGE2", "none", "TRAIN.EMA", "False",
             "DEVICE", args.device]
    return load_config(args.config_file, opts)


def _fresh(cfg, n_attrs: int, rt):
    seed_everything(cfg.SEED)
    model = build_model(cfg, n_attrs)
    place_model(cfg, model, rt)
    return model


def _time(fn, epochs: int) -> float:
    fn(0)  # warm-up
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        fn(e + 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_epoch(cfg, data, loader, rt, epochs: int) -> float:
    model = _fresh(cfg, len(data.attr_names), rt)
    crit = build_loss(cfg, data.attr_names, data.groups, data.label_priors(cfg.DATASET.TRAIN_SPLIT), model)
    opt = build_optimizer(cfg, model)
    step = StepOptions(device=rt.device, amp_dtype=rt.amp_dtype, clip_norm=cfg.TRAIN.CLIP_NORM * cfg.TRAIN.CLIP_GRAD)

    def one(e: int) -> None:
        loader.set_epoch(e)
        train_one_epoch(model, loader, crit, opt, opt=step, epoch=e, progress=False)

    return _time(one, epochs)


def stage2_epoch(cfg, data, loader, rt, mode: str, *, epochs: int) -> float:
    model = _fresh(cfg, len(data.attr_names), rt)
    priors = data.label_priors(cfg.DATASET.TRAIN_SPLIT)
    crit = build_loss(cfg, data.attr_names, data.groups, priors, model).to(rt.device)
    lb = LabelBalanced(model, mode, cfg.STAGE2.BANK_SIZE, cfg.SEED)
    opts = stage2_optimizers(cfg, model, lb.goat)
    step = StepOptions(device=rt.device, amp_dtype=rt.amp_dtype, clip_norm=cfg.TRAIN.CLIP_NORM * cfg.TRAIN.CLIP_GRAD)
    loop = Stage2Loop(model, lb, crit, opts, Stage2Options(step, 0, cfg.STAGE2.POS_PROB, cfg.STAGE2.RESET_EVERY))
    if lb.goat:
        lb.flood.levels.fill_(0.3)

    def one(e: int) -> None:  # epoch index >= 1: GOAT on, and NUMBER 0: FRDL re-samples
        loader.set_epoch(e)
        loop.run(loader, EpochOptions(epoch=e + 1, progress=False, desc="stage 2"))
        loop.end_epoch(e + 1)

    return _time(one, epochs)


def bank_ops(batch: int, n_attrs: int, dim: int, size: int, device: torch.device, *,
             reps: int = 20) -> tuple[float, float]:
    """ms per step of one push + one draw: vectorised ``FeatureBanks`` vs a Python loop over B x N."""
    banks, gen = FeatureBanks(n_attrs, dim, size, device), torch.Generator(device=device).manual_seed(0)
    z, y = torch.randn(batch, n_attrs, dim, device=device), (torch.rand(batch, n_attrs, device=device) < 0.1).float()

    def vectorised() -> None:
        banks.push(z, y)
        banks.draw(batch, 0.5, gen)

    lists = [[[], []] for _ in range(n_attrs)]

    def loop() -> None:  # the shape of the original's per-element queue on the host
        zc, yc = z.cpu(), y.cpu().int()
        for i in range(batch):
            for j in range(n_attrs):
                q = lists[j][int(yc[i, j])]
                q.append(zc[i, j])
                del q[:-size]
        out = torch.zeros(batch, n_attrs, dim)
        for j in range(n_attrs):
            for i in range(batch):
                q = lists[j][int(torch.rand(1) < 0.5)] or lists[j][0] or lists[j][1]
                out[i, j] = q[int(torch.randint(len(q), (1,)))]
        out.to(device)

    def ms(fn) -> float:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return 1000 * (time.perf_counter() - t0) / reps

    return ms(vectorised), ms(loop)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default="configs/demo.yaml")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per row (after one warm-up)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                   help="end the list with -- before KEY VALUE overrides")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("models.pretrained").setLevel(logging.ERROR)  # "starts from RANDOM weights": on purpose
    cfg = _config(args)
    rt = setup_runtime(cfg)
    data = build_data(cfg)
    loaders, _ = build_loaders(cfg, data, [cfg.DATASET.TRAIN_SPLIT], rt.device)
    loader = loaders[cfg.DATASET.TRAIN_SPLIT]
    print(f"{cfg.DATASET.NAME} train {len(loader.rows)} images, batch {cfg.TRAIN.BATCH_SIZE}, {len(loader)} steps; "
          f"{cfg.MODEL.NAME}/{cfg.MODEL.BACKBONE or '-'} {cfg.DATASET.HEIGHT}x{cfg.DATASET.WIDTH}, MODEL.HEAD split, "
          f"{len(data.attr_names)} attributes; {rt.device}, {torch.get_num_threads()} thread(s), AMP {rt.amp_dtype}")
    base = plain_epoch(cfg, data, loader, rt, args.epochs)
    rows = [{"mode": "plain", "s": base}]
    rows += [{"mode": m, "s": stage2_epoch(cfg, data, loader, rt, m, epochs=args.epochs)} for m in args.modes]
    print(f"{'epoch':<12}{'s/epoch':>10}{'img/s':>10}{'x plain':>9}")
    for r in rows:
        print(f"{r['mode']:<12}{r['s']:>10.3f}{len(loader.rows) / r['s']:>10.1f}{r['s'] / base:>9.2f}")
    dim = build_model(cfg, len(data.attr_names)).backbone.out_dim
    vec, py = bank_ops(cfg.TRAIN.BATCH_SIZE, len(data.attr_names), dim, cfg.STAGE2.BANK_SIZE, rt.device)
    print(f"bank push + draw per step (B {cfg.TRAIN.BATCH_SIZE}, N {len(data.attr_names)}, C {dim}, "
          f"bank {cfg.STAGE2.BANK_SIZE}): vectorised {vec:.2f} ms, Python loop over B x N {py:.2f} ms")
    return rows


if __name__ == "__main__":
    sys.exit(exit_code_of(main))
