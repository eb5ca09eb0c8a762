"""DistributedDataParallel on CPU: 2 gloo processes train exactly like one process on the same global batch.

The model is timm's ``test_vit`` (LayerNorm, no BatchNorm, no dropout with DROP_PATH 0): with
BatchNorm each rank would normalise with the statistics of its half batch, so the result would
legitimately differ from one process (SyncBatchNorm fixes that on CUDA only, where the framework
enables it). Without BatchNorm the only difference is floating-point summation order.

The optimizer is SGD: Adam divides each gradient by its own running RMS, so a parameter whose
true gradient is zero (a ViT's key bias: softmax ignores it) gets lr-sized steps from rounding
noise whose sign differs between any two summation orders. The optimizer runs locally on
gradients DDP has already averaged, so SGD checks the distributed part as well as Adam would.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
WORLD = 2


def _opts(tmp: Path, name: str, **extra) -> list[str]:
    opts = {
        "NAME": name, "OUTPUT_DIR": str(tmp / "exp"), "DEVICE": "cpu",
        "DATASET.ROOT": str(tmp / "synth"), "DATASET.SYNTH_SIZE": "48", "DATASET.HEIGHT": "32",
        "DATASET.WIDTH": "16", "MODEL.BACKBONE": "test_vit", "MODEL.DROP_PATH": "0.0",
        "TRAIN.BATCH_SIZE": "8", "TRAIN.MAX_EPOCH": "2", "TRAIN.NUM_WORKERS": "0", "TRAIN.OPTIMIZER.TYPE": "sgd",
        "TRAIN.LR_SCHEDULER.LR_FT": "0.05", "TRAIN.LR_SCHEDULER.LR_NEW": "0.05",
        "VIS.TENSORBOARD": "False", "VIS.PLOTS": "False", "REDIRECTOR": "False",
    }
    opts.update(extra)
    return [x for kv in opts.items() for x in kv]


def _train_capturing(opts: list[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Run ``train(cfg)`` and return its summary and the trained parameters of this process."""
    from configs import load_config
    from tools.engine import run_training
    from tools.engine import trainer as engine_trainer

    seen = {}
    real = engine_trainer.train_one_epoch

    def capture(net, *args, **kwargs):
        seen["net"] = net
        return real(net, *args, **kwargs)

    engine_trainer.train_one_epoch = capture
    try:
        summary = run_training(load_config(REPO / "configs" / "demo.yaml", opts))
    finally:
        engine_trainer.train_one_epoch = real
    net = seen["net"]
    model = net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
    return summary, {n: p.detach().clone() for n, p in model.named_parameters()}


def _worker(rank: int, port: int, opts: list[str], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    try:
        summary, params = _train_capturing(opts)
        from tools.device import on_every_rank

        # a non-finite loss on one rank only: every rank must see it (and skip or stop together)
        finite_everywhere = bool(on_every_rank(torch.tensor(rank == 0)))
        torch.save({"params": params, "summary": summary, "world": dist.get_world_size(),
                    "finite_everywhere": finite_everywhere}, Path(out) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_batches_union_is_the_global_batch():
    """Each rank takes its slice of every global batch (same steps, same augmentation draws)."""
    from dataset.loader import BatchLoader

    n, bs = 50, 8
    rows = np.arange(100, 100 + n)
    labels = np.zeros((200, 3), np.float32)
    images = torch.randint(0, 255, (200, 3, 12, 6), dtype=torch.uint8)

    def loader(rank: int, world: int) -> BatchLoader:
        ld = BatchLoader(rows, labels, bs, train=True, seed=3, device=torch.device("cpu"), images=images,
                         rank=rank, world=world)
        ld.set_epoch(1)
        return ld

    single = list(loader(0, 1))
    ranks = [list(loader(r, WORLD)) for r in range(WORLD)]
    assert len(single) == n // bs and all(len(r) == len(single) for r in ranks)
    for step, (x, y, idx) in enumerate(single):
        parts = [ranks[r][step] for r in range(WORLD)]
        assert all(p[0].shape[0] == bs // WORLD for p in parts)
        assert torch.equal(torch.cat([p[2] for p in parts]), idx)  # the same rows, in the same order
        assert torch.equal(torch.cat([p[0] for p in parts]), x)  # and augmented identically
    assert not torch.equal(single[0][0], images[single[0][2]].float() / 255)  # augmentation did act
    with pytest.raises(Exception, match="not divisible by the 3 DDP processes"):
        BatchLoader(rows, labels, bs, train=True, seed=3, device=torch.device("cpu"), images=images, world=3)


@pytest.mark.skipif(not dist.is_gloo_available(), reason="torch built without gloo")
def test_two_gloo_processes_match_one_process(tmp_path):
    from tools.checkpoint import load_checkpoint

    # one process first (it also generates the SYNTH images, so the two ranks only read them)
    single_summary, single = _train_capturing(_opts(tmp_path, "single"))

    out = tmp_path / "ranks"
    out.mkdir()
    mp.spawn(_worker, args=(_free_port(), _opts(tmp_path, "ddp", **{"DATASET.CACHE_DIR": str(tmp_path / "cache")}),
                            str(out)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD))
    assert r0["world"] == WORLD
    assert r0["finite_everywhere"] is False and r1["finite_everywhere"] is False

    # DDP keeps the replicas bit-identical, and they equal the one-process result on the same global batches
    assert r0["params"].keys() == r1["params"].keys() == single.keys()
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), f"{name} differs between ranks"
        torch.testing.assert_close(p, single[name], rtol=1e-5, atol=1e-6, msg=f"{name}: DDP != single process")

    # only rank 0 wrote, once: one experiment folder with one row per epoch and one log header
    exp = tmp_path / "exp" / "SYNTH" / "ddp"
    for f in ("summary.json", "last.pth", "best_model.pth", "metrics.csv", "config.yaml", "log.txt"):
        assert (exp / f).is_file(), f
    assert not list(exp.glob("*.tmp*")) and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    log_text = (exp / "log.txt").read_text()
    assert log_text.count("experiment ") == 1 and "world 2" in log_text
    import pandas as pd

    ddp_rows = pd.read_csv(exp / "metrics.csv")
    one_rows = pd.read_csv(tmp_path / "exp" / "SYNTH" / "single" / "metrics.csv")
    assert list(ddp_rows["epoch"]) == [0, 1]
    # train loss averaged over the ranks, val loss and metrics over the gathered whole split
    for col in ("train_loss", "val_loss", "val_ma", "test_loss"):
        np.testing.assert_allclose(ddp_rows[col], one_rows[col], rtol=1e-4, atol=1e-5, err_msg=col)
    ck = load_checkpoint(exp / "last.pth")
    for name, p in r0["params"].items():
        assert torch.equal(ck["model"][name], p)
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["val"]["ma"] == pytest.approx(single_summary["val"]["ma"], abs=1e-6)
    assert r1["summary"]["val"]["ma"] == summary["val"]["ma"]  # rank 1 read rank 0's finished file
