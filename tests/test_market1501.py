"""The Market-1501 reader on a miniature in the published layout, with the real market_attribute.mat
(read-only; never copied: linked beside the miniature), and the PK batch sampler."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

import dataset  # noqa: F401  (registers the readers)
from configs import load_config
from dataset.base import UNKNOWN, DataError
from dataset.public.market1501 import MARKET, protocol_accuracy
from dataset.registry import read_dataset
from dataset.samplers import PKSampler, contiguous_ids, identity_lookup
from tools.evaluation.reid import evaluate_reid

REPO = Path(__file__).resolve().parents[1]
MAT_NAME = "Market-1501_Attribute/market_attribute.mat"


def market_mat() -> Path | None:
    for p in (REPO / "data" / MAT_NAME, REPO.parent / "shared" / "data" / MAT_NAME):
        if p.is_file():
            return p
    return None


# Train identities 2, 7, 10, 11, 12 and test identities 1, 3, 4, 5 are in the real file.
TRAIN = ["0002_c1s1_000451_03", "0002_c2s1_000301_01", "0002_c3s1_000551_01", "0007_c1s1_000951_01",
         "0007_c1s1_001051_02", "0007_c4s1_000101_01", "0010_c1s1_002301_01", "0010_c2s1_002151_01",
         "0011_c5s1_000101_01", "0011_c5s1_000126_01", "0011_c5s1_000151_01", "0012_c6s1_000326_01"]
QUERY = ["0001_c1s1_001051_00", "0003_c2s1_000276_00", "0004_c1s1_000301_00"]
GALLERY = ["-1_c1s1_000401_03", "0000_c1s1_000151_01", "0001_c1s1_001101_01", "0001_c2s1_000301_01",
           "0003_c3s1_000801_01", "0004_c1s1_000476_01", "0005_c5s1_000951_02"]


def write_miniature(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder, names in (("bounding_box_train", TRAIN), ("query", QUERY), ("bounding_box_test", GALLERY)):
        (root / folder).mkdir(parents=True)
        for n in names:
            Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(root / folder / f"{n}.jpg")
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0")  # the release ships these: ignored
    return root


@pytest.fixture
def mini(tmp_path) -> Path:
    mat = market_mat()
    if mat is None:
        pytest.skip(f"real {MAT_NAME} not found at data/ or ../shared/data/")
    (tmp_path / "Market-1501_Attribute").mkdir()
    (tmp_path / "Market-1501_Attribute" / "market_attribute.mat").symlink_to(mat)  # beside ROOT: found by ""
    return write_miniature(tmp_path / "Market-1501")


def read(root: Path, *opts: str):
    return read_dataset(load_config(REPO / "configs" / "market1501.yaml", ["DATASET.ROOT", str(root), *opts]))


def expected_row(part: dict, pid: int) -> list[float]:
    """The README's meaning of each column, read by field name from the file (independent of the reader)."""
    i = [int(x) for x in part["image_index"]].index(pid)
    meaning = {"female": ("gender", 2), "long_hair": ("hair", 2), "short_sleeve": ("up", 2),
               "short_lower": ("down", 2), "pants": ("clothes", 2), "hat": ("hat", 2), "backpack": ("backpack", 2),
               "bag": ("bag", 2), "handbag": ("handbag", 2), "age_young": ("age", 1), "age_teenager": ("age", 2),
               "age_adult": ("age", 3), "age_old": ("age", 4)}
    return [float(part[meaning.get(c, (c, 2))[0]][i] == meaning.get(c, (c, 2))[1]) for c in MARKET.columns()]


def test_reader_reads_images_ids_and_attributes_by_name(mini):
    data = read(mini)
    mat = sio.loadmat(str(market_mat()), simplify_cells=True)["market_attribute"]
    assert list(mat["train"]) != list(mat["test"])  # the two parts order their fields differently
    names = [p.stem for p in data.image_paths]
    assert names == TRAIN + QUERY + GALLERY  # Thumbs.db skipped
    assert data.attr_names == MARKET.columns() and len(data.attr_names) == 30
    assert list(data.identities[-7:]) == [-1, 0, 1, 1, 3, 4, 5]
    assert list(data.cameras[:3]) == [1, 2, 3]
    for row, name in enumerate(names):
        pid = int(name.split("_")[0])
        if pid <= 0:
            assert (data.labels[row] == UNKNOWN).all()  # junk and distractor
        else:
            part = mat["train"] if row < len(TRAIN) else mat["test"]
            assert data.labels[row].tolist() == expected_row(part, pid), name
    s = data.splits
    assert sorted(np.concatenate([s["train"], s["val"]]).tolist()) == s["trainval"].tolist() == list(range(12))
    assert not set(data.identities[s["train"]]) & set(data.identities[s["val"]])
    assert len(set(data.identities[s["val"]])) == 1  # round(10% of 5 identities), at least one
    vq, vg = s["val_query"], s["val_gallery"]
    # the validation identity (0010) has one image in each of cameras 1 and 2: Market's draw (one per identity
    # and camera) would take both and leave no gallery, so the query is one camera's image, the gallery the other's
    assert len(vq) == len(vg) == 1 and data.identities[vq[0]] == data.identities[vg[0]]
    assert data.cameras[vq[0]] != data.cameras[vg[0]]
    assert sorted(np.concatenate([vq, s["val_gallery"]]).tolist()) == s["val"].tolist()
    assert s["query"].tolist() == [12, 13, 14] and s["gallery"].tolist() == list(range(15, 22))
    assert s["test"].tolist() == list(range(17, 22))  # gallery minus junk and distractor


def test_label_sets_and_groups(mini):
    groups = {g.name: g.kind for g in read(mini).groups}
    assert groups == {"age": "exclusive", "upcolour": "exclusive", "downcolour": "exclusive"}  # the 12-attr protocol
    groups = {g.name: g.kind for g in read(mini, "DATASET.LABEL", "all").groups}
    assert groups == {"age": "exclusive", "upcolour": "optional", "downcolour": "optional"}
    assert read(mini, "DATASET.ATTRS", "['female', 'hat']", "DATASET.GROUPS", "[]").attr_names == ["female", "hat"]


def test_protocol_accuracy_follows_the_authors_script(mini):
    data = read(mini)
    rows = data.splits["test"]
    y = data.labels[rows]
    acc = protocol_accuracy(y, y, data.attr_names)
    assert len(acc) == 13 and acc["gender"] == 1.0 and acc["age"] == 1.0
    up = [data.attr_names.index(c) for c in MARKET.colours[0][1]]
    has_colour = y[:, up].sum(1) > 0  # an identity without an upper colour is always wrong
    assert acc["upcolour"] == pytest.approx(has_colour.mean())
    flipped = y.copy()
    flipped[:, data.attr_names.index("female")] = 1 - flipped[:, data.attr_names.index("female")]
    assert protocol_accuracy(flipped, y, data.attr_names)["gender"] == 0.0


def test_retrieval_on_the_reader_splits(mini):
    data = read(mini)
    q, g = data.splits["query"], data.splits["gallery"]
    feats = np.eye(16)[np.maximum(data.identities, 0)]  # a perfect embedding: one axis per identity
    r = evaluate_reid(feats[q], feats[g], data.identities[q], data.identities[g], q_cams=data.cameras[q],
                      g_cams=data.cameras[g])
    # 0001: its cam-1 gallery image is ignored, the cam-2 one is rank 1; 0003: rank 1;
    # 0004: only a cam-1 gallery image, from its own camera -> no valid match
    assert r["rank1"] == 1.0 and r["mAP"] == 1.0 and r["n_queries_valid"] == 2 and r["n_queries_no_match"] == 1


def test_identities_only_and_missing_attribute_file(tmp_path):
    root = write_miniature(tmp_path / "Market-1501")
    data = read(root, "DATASET.ATTR_FILE", "none")
    assert data.labels.shape == (22, 0) and data.groups == [] and len(data.identities) == 22
    with pytest.raises(DataError, match="DATASET.ATTR_FILE"):
        read(root)  # no attribute file anywhere and a PAR task
    cfg = load_config(REPO / "configs" / "market1501.yaml", ["DATASET.ROOT", str(root)])
    cfg.defrost()
    cfg.TASK = "reid"  # the trainer's TASK key (ReID integration): reid needs no attributes
    assert read_dataset(cfg).labels.shape == (22, 0)
    with pytest.raises(DataError, match="is not a file"):
        read(root, "DATASET.ATTR_FILE", str(tmp_path / "nope.mat"))


def test_user_mistakes_name_the_file(tmp_path):
    root = write_miniature(tmp_path / "Market-1501")
    bad = root / "query" / "img_0001.jpg"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(bad)
    with pytest.raises(DataError, match="img_0001.jpg.*<pid>_c<camera>"):
        read(root, "DATASET.ATTR_FILE", "none")
    bad.unlink()
    fields = {f: np.ones(2, np.uint8) for f, _ in MARKET.binary}
    fields.update({f: np.ones(2, np.uint8) for _, fs in MARKET.colours for f in fs})
    fields["age"] = np.array([1, 5], np.uint8)  # 5 is no age class
    fields["image_index"] = np.array(["0002", "0007"], dtype=object)
    mat = tmp_path / "fake.mat"
    sio.savemat(str(mat), {"market_attribute": {"train": fields, "test": dict(fields)}})
    with pytest.raises(DataError, match=r"market_attribute.train.age holds 5"):
        read(root, "DATASET.ATTR_FILE", str(mat))
    fields["age"] = np.array([1, 4], np.uint8)
    sio.savemat(str(mat), {"market_attribute": {"train": fields, "test": dict(fields)}})
    with pytest.raises(DataError, match="identity 10 has no entry"):
        read(root, "DATASET.ATTR_FILE", str(mat))


# ----------------------------------------------------------------------------- PK sampler
def pk_rows():
    pids = np.array([5] * 6 + [8] * 4 + [9] * 2 + [11] * 1 + [12] * 5)  # ids 9, 11 have fewer than K = 4
    rows = np.arange(100, 100 + len(pids))  # dataset rows, not positions
    return rows, pids


def test_pk_batches_are_p_distinct_ids_times_k():
    rows, pids = pk_rows()
    of = dict(zip(rows.tolist(), pids.tolist()))
    s = PKSampler(rows, pids, batch_size=8, k=4, seed=3)
    batches = s.batches()
    assert len(batches) == len(s) >= 2
    for b in batches:
        ids = [of[r] for r in b]
        assert len(b) == 8 and len(set(ids)) == 2
        assert all(ids[j * 4:(j + 1) * 4] == [ids[j * 4]] * 4 for j in range(2))  # K consecutive per identity
    s.set_epoch(1)
    drawn = {}
    for e in range(6):
        s.set_epoch(e)
        for b in s.batches():
            for j in range(2):
                drawn.setdefault(of[b[j * 4]], []).append(b[j * 4:(j + 1) * 4])
    short = drawn[11][0]
    assert len(short) == 4 and set(short) == {112}  # 1 image, drawn 4 times with replacement
    assert all(len(set(g)) == 4 for g in drawn[5])  # enough images: without replacement


def test_pk_is_deterministic_per_epoch_and_ddp_slices_whole_ids():
    rows, pids = pk_rows()
    a, b = PKSampler(rows, pids, 8, 4, seed=1), PKSampler(rows, pids, 8, 4, seed=1)
    a.set_epoch(2), b.set_epoch(2)
    assert all(np.array_equal(x, y) for x, y in zip(a.batches(), b.batches()))
    b.set_epoch(3)
    assert any(not np.array_equal(x, y) for x, y in zip(a.batches(), b.batches()))
    ranks = [PKSampler(rows, pids, 8, 4, seed=1, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    for full, r0, r1 in zip(a.global_batches(), ranks[0].batches(), ranks[1].batches()):
        assert np.array_equal(np.concatenate([r0, r1]), full)
        assert len(set(pids[r0 - 100])) == 1 and len(set(pids[r1 - 100])) == 1  # one whole identity per rank


def test_pk_refuses_impossible_batches():
    rows, pids = pk_rows()
    with pytest.raises(DataError, match="multiple of REID.NUM_INSTANCE"):
        PKSampler(rows, pids, 10, 4)
    with pytest.raises(DataError, match="DDP"):
        PKSampler(rows, pids, 12, 4, world=2)
    with pytest.raises(DataError, match="identities but a PK batch needs"):
        PKSampler(rows, pids, 24, 4)
    labels, uniq = contiguous_ids(pids)
    assert uniq.tolist() == [5, 8, 9, 11, 12] and labels[[0, 6, 12]].tolist() == [0, 1, 3]
    lookup, n = identity_lookup(np.array([-1, 0, 7, 3, 7, 9]), np.array([2, 3, 4]))  # rows of the train split
    assert n == 2 and lookup.tolist() == [-1, -1, 1, 0, 1, -1]


def test_dukemtmc_alias_reads_duke_names_and_fields(tmp_path):
    from dataset.public.market1501 import DUKE

    root = tmp_path / "DukeMTMC-reID"
    rng = np.random.default_rng(1)
    names = {"bounding_box_train": ["0005_c2_f0046985", "0005_c5_f0051781", "0007_c1_f0040001", "0008_c3_f0001"],
             "query": ["0002_c1_f0044631"], "bounding_box_test": ["0002_c2_f0044700", "0003_c5_f0001234"]}
    for folder, stems in names.items():
        (root / folder).mkdir(parents=True)
        for n in stems:
            Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(root / folder / f"{n}.jpg")

    def part(ids):
        fields = {f: rng.integers(1, 3, len(ids)).astype(np.uint8) for f, _ in DUKE.binary}
        for _, fs in DUKE.colours:
            pick = rng.integers(0, len(fs), len(ids))
            fields.update({f: np.where(pick == j, 2, 1).astype(np.uint8) for j, f in enumerate(fs)})
        fields["image_index"] = np.array(ids, dtype=object)
        return fields

    train, test = part(["0005", "0007", "0008"]), part(["0002", "0003"])
    (root / "attribute").mkdir()
    sio.savemat(str(root / "attribute" / "duke_attribute.mat"), {"duke_attribute": {"train": train, "test": test}})
    data = read_dataset(load_config(REPO / "configs" / "dukemtmc.yaml", ["DATASET.ROOT", str(root)]))
    assert data.name == "DUKEMTMC" and data.attr_names == DUKE.columns() and len(data.attr_names) == 23
    assert list(data.identities) == [5, 5, 7, 8, 2, 2, 3] and list(data.cameras) == [2, 5, 1, 3, 1, 2, 5]
    assert data.labels[0, data.attr_names.index("long_top")] == float(train["top"][0] == 2)
    acc = protocol_accuracy(data.labels[data.splits["test"]], data.labels[data.splits["test"]], data.attr_names, DUKE)
    assert len(acc) == 11 and acc["mean"] == 1.0  # 10 attributes, every identity has its colours here
