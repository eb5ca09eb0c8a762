"""TASK reid / multitask training end to end on a generated Market-1501-layout miniature (identities
whose two clothing colours encode the person), plus the pieces it adds: random erasing, the PK hook of
the batch loader, the center step of the criterion and the TASK config checks.

The acceptance command (issue 14) runs in-process through ``run.main``: the same code path as
``uv run run.py --config-file configs/market1501.yaml DATASET.ROOT <folder> TASK reid``.
"""
from __future__ import annotations

import colorsys
import csv
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO
from tests.robustness._helpers import assert_same_run
from tests.test_market1501 import market_mat

MARKET_YAML = REPO / "configs" / "market1501.yaml"
REID_KEYS = ("rank1", "mAP", "mINP")
TINY = {"DEVICE": "cpu", "MODEL.BACKBONE": "test_resnet", "DATASET.HEIGHT": 64, "DATASET.WIDTH": 32,
        "TRAIN.BATCH_SIZE": 16, "TRAIN.MAX_EPOCH": 2, "TEST.BATCH_SIZE": 64, "VIS.TENSORBOARD": False,
        "VIS.PLOTS": False, "REDIRECTOR": False, "REID.VIS_QUERIES": 4, "TRAIN.DATAAUG.RANDOM_ERASING": 0.5,
        "REID.CENTER_WEIGHT": 0.0005, "TRAIN.EMA": True, "TRAIN.EMA_DECAY": 0.9,
        "TRAIN.LR_SCHEDULER.LR_FT": 0.001, "TRAIN.LR_SCHEDULER.LR_NEW": 0.001, "TRAIN.LR_SCHEDULER.WMUP_EPOCHS": 1}


# ----------------------------------------------------------------------------- the miniature
def person(pid: int, rng: np.random.Generator) -> Image.Image:
    """Upper and lower body in two colours of the identity, with noise and a brightness change per image."""
    img = np.zeros((32, 16, 3))
    for k, rows in enumerate((slice(0, 16), slice(16, 32))):
        img[rows] = np.array(colorsys.hsv_to_rgb((pid * 0.618034 + k * 0.31) % 1.0, 0.8, 0.9)) * 255
    img = img * rng.uniform(0.6, 1.2) + rng.normal(0, 40, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def write_market(root: Path, train_pids, test_pids, seed: int = 0) -> Path:
    """bounding_box_train: 6 images per identity (cameras 1, 1, 2, 2, 3, 3); query: cameras 1 and 2 of every
    test identity; bounding_box_test: cameras 1, 2, 3, 3 of each, one junk (-1) and one distractor (0000)."""
    rng = np.random.default_rng(seed)
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (root / folder).mkdir(parents=True)
    frame = 0
    plan = [("bounding_box_train", pid, (1, 1, 2, 2, 3, 3)) for pid in train_pids]
    plan += [(f, pid, cams) for pid in test_pids
             for f, cams in (("query", (1, 2)), ("bounding_box_test", (1, 2, 3, 3)))]
    for folder, pid, cams in plan:
        for cam in cams:
            frame += 1
            person(pid, rng).save(root / folder / f"{pid:04d}_c{cam}s1_{frame:06d}_01.jpg", quality=95)
    person(999, rng).save(root / "bounding_box_test" / "-1_c1s1_000001_01.jpg")
    person(998, rng).save(root / "bounding_box_test" / "0000_c2s1_000002_01.jpg")
    return root


def overrides(root: Path, out: Path, **extra) -> list[str]:
    opts = {"DATASET.ROOT": root, "OUTPUT_DIR": out, **TINY, **extra}
    return [str(x) for kv in opts.items() for x in kv]


def exp_of(out: Path, name: str = "resnet50.reid") -> Path:
    return out / "MARKET1501" / name


def metrics(exp: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(exp / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def check_retrieval_files(exp: Path) -> dict:
    """metrics.csv: rank1 / mAP / mINP of val and test every epoch; best_metrics.json: the best epoch's."""
    header, rows = metrics(exp)
    cols = [f"{tag}_{k}" for tag in ("val", "test") for k in REID_KEYS]
    assert set(cols) <= set(header) and len(rows) == 2, header
    assert all(0.0 <= float(r[c]) <= 1.0 for r in rows for c in cols)
    best = json.loads((exp / "best_metrics.json").read_text())
    for tag in ("val", "test"):
        assert all(0.0 <= best[tag][k] <= 1.0 for k in REID_KEYS), best[tag]
    row = rows[best["epoch"]]
    for t in ("val", "test"):
        assert all(float(row[f"{t}_{k}"]) == pytest.approx(best[t][k], abs=1e-5) for k in REID_KEYS)
    assert best["test"]["n_queries_valid"] == 12 and best["val"]["n_queries_valid"] == 6  # 6 / 2 ids, 2 cameras
    assert (exp / "ranked_list_best.png").stat().st_size > 0
    return best


@pytest.fixture(scope="module")
def reid_run(tmp_path_factory) -> tuple[Path, Path]:
    """The acceptance command on a folder with no attribute file: (dataset root, output dir)."""
    import run

    base = tmp_path_factory.mktemp("reid")
    root = write_market(base / "Market-1501", range(1, 21), range(21, 27))
    out = base / "exp"
    assert run.main(["--config-file", str(MARKET_YAML), "DATASET.ROOT", str(root), "TASK", "reid",
                     *overrides(root, out)]) == 0
    return root, out


# ----------------------------------------------------------------------------- end to end
def test_reid_run_writes_rank1_map_minp_per_epoch_and_the_best_epochs(reid_run):
    root, out = reid_run
    exp = exp_of(out)
    check_retrieval_files(exp)
    header, _ = metrics(exp)
    assert not [c for c in header if c.endswith("_ma")]  # no attribute file, TASK reid: no attribute metrics
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["task"] == "reid" and summary["select"] == "mAP" and summary["identities_train"] == 18


def test_reid_checkpoint_embeds_under_its_contract_and_exports_embeddings_to_onnx(reid_run, tmp_path):
    from tools.inference.loading import load_for_inference
    from tools.inference.onnx import export_onnx
    from tools.inference.predictor import Predictor

    path = exp_of(reid_run[1]) / "best_model.pth"
    loaded = load_for_inference(path)
    assert loaded.contract.task == "reid" and loaded.contract.attr_names == [] and loaded.contract.embed_dim > 0
    x = torch.rand(3, 3, 64, 32)
    with torch.inference_mode():
        emb = loaded.model(x)
    assert emb.shape == (3, loaded.contract.embed_dim)
    pytest.importorskip("onnxruntime")
    onnx_file = export_onnx(Predictor(loaded), tmp_path / "reid.onnx")  # verified against PyTorch inside
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["embeddings"]
    np.testing.assert_allclose(sess.run(None, {"images": x.numpy()})[0], emb.numpy(), atol=1e-4)
    from tools.inference.onnx import OnnxPredictor  # search by example embeds crops through either runtime

    crops = [np.full((80, 40, 3), v, np.uint8) for v in (30, 120, 220)]
    pred = Predictor(loaded)
    with torch.inference_mode():
        want = loaded.model(pred.preprocess(crops)).numpy()
    assert pred.has_embeddings
    np.testing.assert_array_equal(pred.embed_images(crops), want)
    np.testing.assert_allclose(OnnxPredictor(pred, onnx_file).embed_images(crops), want, atol=1e-4)


def test_mode_eval_of_a_reid_checkpoint_reproduces_its_best_epoch(reid_run):
    import run

    root, out = reid_run
    exp = exp_of(out)
    assert run.main(["--config-file", str(MARKET_YAML), "--mode", "eval", "DATASET.ROOT", str(root), "TASK", "reid",
                     *overrides(root, out)]) == 0
    got, best = json.loads((exp / "eval_reid.json").read_text()), json.loads((exp / "best_metrics.json").read_text())
    for tag in ("val", "test"):
        assert got[tag] == pytest.approx(best[tag], abs=1e-6)
    # the per-query results (what scripts.summarize_reid resamples) of training's best epoch and of eval agree
    with np.load(exp / "reid_queries_best_test.npz") as a, np.load(exp / "reid_queries_eval_test.npz") as b:
        assert np.array_equal(a["rows"], b["rows"]) and np.array_equal(a["first"], b["first"])
        assert np.allclose(a["ap"], b["ap"]) and len(a["rows"]) == best["test"]["n_queries_valid"] + \
            best["test"]["n_queries_no_match"]
        assert a["ap"][a["n_matches"] > 0].mean() == pytest.approx(best["test"]["mAP"], abs=1e-6)


def test_reid_resume_after_a_mid_epoch_stop_is_bit_identical(reid_run, monkeypatch):
    """SIGTERM at epoch 1 step 2 (of 4 PK batches), then TRAIN.RESUME auto: the same metrics, weights,
    optimizer, EMA, schedule and centers as the uninterrupted acceptance run."""
    from configs import load_config
    from tools.engine import trainer as engine_trainer
    from tools.engine import run_training

    root, out = reid_run
    opts = ["TASK", "reid", "NAME", "stopped", *overrides(root, out)]
    real = engine_trainer.train_one_epoch

    def one_epoch(*args, **kw):
        if kw["epoch"] == 1 and kw["start_step"] == 0:
            kw["on_step"] = lambda s: s == 2 and os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kw)

    monkeypatch.setattr(engine_trainer, "train_one_epoch", one_epoch)
    with pytest.raises(KeyboardInterrupt, match="stopped at epoch 1, step 2"):
        run_training(load_config(MARKET_YAML, opts))
    monkeypatch.setattr(engine_trainer, "train_one_epoch", real)
    run_training(load_config(MARKET_YAML, [*opts, "TRAIN.RESUME", "auto"]))
    assert_same_run(exp_of(out, "stopped"), exp_of(out))


def test_multitask_on_the_real_market_attributes(tmp_path):
    mat = market_mat()
    if mat is None:
        pytest.skip("real Market-1501_Attribute/market_attribute.mat not found at data/ or ../shared/data/")
    import scipy.io as sio

    from configs import load_config
    from tools.engine import run_training
    from tools.inference.predictor import Predictor

    parts = sio.loadmat(str(mat), simplify_cells=True)["market_attribute"]
    train_ids, test_ids = ([int(p) for p in parts[s]["image_index"][:n]] for s, n in (("train", 20), ("test", 6)))
    root = write_market(tmp_path / "Market-1501", train_ids, test_ids)
    opts = ["TASK", "multitask", "DATASET.ATTR_FILE", str(mat), "METRIC.SELECT", "mAP", "REID.TASK_WEIGHTING", "gradnorm",
            *overrides(root, tmp_path / "exp")]
    summary = run_training(load_config(MARKET_YAML, opts))
    exp = exp_of(tmp_path / "exp")
    best = check_retrieval_files(exp)
    header, rows = metrics(exp)
    assert {"val_ma", "test_ma", "train_bce", "train_id", "train_triplet", "train_center", "train_w_reid"} <= set(header)
    assert all(float(r["train_w_reid"]) + float(r["train_w_attr"]) == pytest.approx(2.0, abs=1e-4) for r in rows)
    assert 0.0 <= best["val"]["ma"] <= 1.0 and summary["select"] == "mAP"
    assert best["val"]["mAP"] == pytest.approx(max(float(r["val_mAP"]) for r in rows), abs=1e-5)  # selected on it
    assert (exp / "attributes_best.csv").is_file()
    import run  # --mode eval: the attribute head on TEST.SPLIT, and the retrieval pairs

    assert run.main(["--config-file", str(MARKET_YAML), "--mode", "eval", *opts]) == 0
    assert json.loads((exp / "eval_test.json").read_text())["ma"] == pytest.approx(best["test"]["ma"], abs=1e-6)
    reid = json.loads((exp / "eval_reid.json").read_text())
    assert reid["test"]["mAP"] == pytest.approx(best["test"]["mAP"], abs=1e-6)
    pred = Predictor.from_checkpoint(exp / "best_model.pth", device="cpu")
    assert pred.contract.task == "multitask" and len(pred.attr_names) == 30
    probs = pred.predict_images([np.full((64, 32, 3), 128, np.uint8)])
    assert probs.shape == (1, 30) and ((probs >= 0) & (probs <= 1)).all()
    crops = [np.full((80, 40, 3), v, np.uint8) for v in (30, 128, 220)]  # video: one pass gives both
    both = pred.predict_with_embeddings(crops)
    np.testing.assert_array_equal(both[0], pred.predict_images(crops))
    np.testing.assert_array_equal(both[1], pred.embed_images(crops))
    pytest.importorskip("onnxruntime")
    from tools.inference.onnx import OnnxPredictor, export_onnx

    fast = OnnxPredictor(pred, export_onnx(pred, tmp_path / "mt.onnx"))
    for got, want in zip(fast.predict_with_embeddings(crops), both):
        np.testing.assert_allclose(got, want, atol=1e-4)


# ----------------------------------------------------------------------------- the pieces
def test_random_erasing_is_seeded_sliceable_and_off_at_zero():
    from dataset.augment import augment_batch, random_erase

    x = torch.randint(0, 255, (6, 3, 32, 16), dtype=torch.uint8)
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(augment_batch(x, gen(), erase=0.0), augment_batch(x, gen()))  # off: earlier runs unchanged
    a, b = augment_batch(x, gen(), erase=1.0), augment_batch(x, gen(), erase=1.0)
    assert torch.equal(a, b)
    full = random_erase(x, gen(), 1.0)
    assert torch.equal(random_erase(x[2:4], gen(), 1.0, total=6, start=2), full[2:4])  # a DDP rank's slice
    erased = (full != x).any(1)  # (B, H, W) pixels changed
    fill = torch.tensor([124, 116, 104], dtype=torch.uint8).view(3, 1, 1)
    for i in range(6):
        share = erased[i].float().mean().item()
        assert 0.0 < share <= 0.45
        assert (full[i][:, erased[i]] == fill.view(3, 1)).all()
    assert torch.equal(random_erase(x, gen(), 0.0), x)


def test_batch_loader_takes_pk_batches_and_yields_identity_targets():
    from dataset.loader import BatchLoader
    from dataset.samplers import PKSampler, identity_lookup

    pids = np.repeat(np.arange(10, 16), 5)  # 6 identities x 5 images
    rows = np.arange(len(pids))
    lookup, n = identity_lookup(pids, rows)
    images = torch.randint(0, 255, (len(pids), 3, 8, 4), dtype=torch.uint8)
    sampler = PKSampler(rows, pids, 8, 4, seed=3)
    loader = BatchLoader(rows, np.zeros((len(pids), 0)), 8, train=True, seed=3, device=torch.device("cpu"),
                         images=images, sampler=sampler, identities=lookup, augment=False)
    loader.set_epoch(1)
    got = [(y["ids"].tolist(), r.tolist()) for _, y, r in loader]
    sampler.set_epoch(1)
    assert [r for _, r in got] == [b.tolist() for b in sampler.batches()] and n == 6
    for ids, r in got:
        assert ids == lookup[r].tolist() and sorted(np.bincount(ids).tolist())[-2:] == [4, 4]
    loader.set_epoch(1, start_step=1)  # a mid-epoch resume skips the batches already done
    assert [r.tolist() for _, _, r in loader] == [r for _, r in got[1:]]


def test_center_step_moves_the_centers_toward_their_features_outside_the_optimiser():
    from losses.multitask import TaskCriterion
    from losses.reid import CenterLoss, ReIDCriterion

    crit = TaskCriterion(ReIDCriterion([("center", 1.0, CenterLoss(2, 3))]), center_lr=0.5)
    centers = crit.center.centers
    assert not centers.requires_grad
    before = centers.detach().clone()
    feat = torch.randn(4, 3, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 1])
    loss, parts = crit({"feat": feat}, {"ids": ids, "attrs": torch.zeros(4, 0)})
    loss.backward()
    # one SGD step on mean_i ||x_i - c_yi||^2: c_k -= lr * 2 * sum_{i in k} (c_k - x_i) / B
    for k in range(2):
        x = feat.detach()[ids == k]
        expected = before[k] - 0.5 * 2 * (before[k] - x).sum(0) / 4
        torch.testing.assert_close(centers[k], expected)
    assert feat.grad is not None and parts["center"] > 0


def test_task_config_checks_name_the_key():
    from configs import ConfigError, load_config

    with pytest.raises(ConfigError, match="METRIC.SELECT mAP is a ReID metric"):
        load_config(MARKET_YAML, ["METRIC.SELECT", "mAP"])
    with pytest.raises(ConfigError, match="REID.NUM_INSTANCE"):
        load_config(MARKET_YAML, ["TASK", "reid", "TRAIN.BATCH_SIZE", "30"])
    with pytest.raises(ConfigError, match="TRAIN.DATAAUG.RANDOM_ERASING"):
        load_config(MARKET_YAML, ["TRAIN.DATAAUG.RANDOM_ERASING", "1.5"])
    with pytest.raises(ConfigError, match="TASK"):
        load_config(MARKET_YAML, ["TASK", "both"])


def test_the_par_trainer_refuses_a_reid_config(tmp_path):
    from configs import ConfigError, load_config
    from tools.engine.trainer import Trainer

    with pytest.raises(ConfigError, match="ReIDTrainer"):
        Trainer(load_config(MARKET_YAML, ["TASK", "reid", "OUTPUT_DIR", str(tmp_path)]))


def test_gradnorm_across_the_two_tasks_balances_their_gradients():
    from configs import ConfigError, load_config
    from losses.bce import BCETerm
    from losses.gradnorm import GradNormWeights
    from losses.multitask import TaskCriterion
    from losses.reid import CenterLoss, ReIDCriterion
    from losses.stack import LossStack

    torch.manual_seed(0)
    shared, head = torch.nn.Linear(6, 4), torch.nn.Linear(4, 3)
    weights = GradNormWeights(2, lambda: list(shared.parameters()), alpha=1.5, lr=0.05)
    # the ReID term weighted 20x: its gradient on the shared layer dominates at equal training rates
    crit = TaskCriterion(ReIDCriterion([("center", 1.0, CenterLoss(2, 4))]), LossStack([("bce", 1.0, BCETerm())], 3),
                         reid_weight=20.0, center_lr=0.0, task_weights=weights)
    x, ids = torch.randn(8, 6), torch.tensor([0, 1] * 4)
    y = (torch.rand(8, 3) > 0.5).float()
    seen = []
    for _ in range(30):
        feat = shared(x)
        loss, parts = crit({"feat": feat, "attrs": head(feat)}, {"ids": ids, "attrs": y})
        seen.append((float(parts["w_reid"]), float(parts["w_attr"])))
        assert float(loss.detach()) == pytest.approx(seen[-1][0] * 20 * float(parts["reid"]) + seen[-1][1] * float(parts["attr"]),
                                            rel=1e-5)
    assert seen[0] == (1.0, 1.0)
    assert all(w_r + w_a == pytest.approx(2.0, abs=1e-5) for w_r, w_a in seen)
    assert seen[-1][0] < 0.8 < 1.2 < seen[-1][1]  # the dominating task is weighed down
    with pytest.raises(ConfigError, match="TASK_WEIGHTING gradnorm weighs the two tasks"):
        load_config(MARKET_YAML, ["TASK", "reid", "REID.TASK_WEIGHTING", "gradnorm"])
    with pytest.raises(ConfigError, match="a task weighted 0 has no gradient"):
        load_config(MARKET_YAML, ["TASK", "multitask", "REID.TASK_WEIGHTING", "gradnorm", "REID.ATTR_WEIGHT", "0"])
    with pytest.raises(ConfigError, match="fixed \\| gradnorm"):
        load_config(MARKET_YAML, ["TASK", "multitask", "REID.TASK_WEIGHTING", "uncertainty"])
