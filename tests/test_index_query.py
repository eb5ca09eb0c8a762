"""Reading queries and scoring them: free text mapped onto the model's vocabulary (unknown words named),
one group semantics for the score and the labels (the wall-sliver case), search by example with a TASK
reid checkpoint on tracks (tracks JSON and index) and on a crop folder, and SQLite = PostgreSQL."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests._index_helpers import dump, ingest_two_cameras, make_reid_checkpoint
from tests._video_helpers import make_video
from tests.test_search import NATIVE_GROUPS, NATIVE_NAMES
from configs.default import get_cfg_defaults
from cctv.index.freetext import read_free_text
from cctv.index.ingest import ModelInfo, VideoIngestor
from cctv.index.search import Request, Searcher
from cctv.index.store import metadata, open_index
from cctv.semantics import labels_with_confidence, term_probability
from cctv.vocab import QueryError, Vocabulary, parse_query

NATIVE = Vocabulary(NATIVE_NAMES, NATIVE_GROUPS)


@pytest.mark.parametrize("text, read, unknown", [
    ("woman in a red top with a backpack, no hat", "female, upper_colour=red, Backpack, not Hat", []),
    ("old man in black trousers", "age=old, male, lower_colour=black", []),
    ("a guy wearing sunglasses and a red jacket", "male, eyewear=Sunglasses, upper_colour=red", []),
    ("young lady without glasses", "age=young, female, not eyewear=Glasses", []),
    ("tall man with an umbrella and a rucksack", "male, Backpack", ["tall", "umbrella"]),
    ("woman with a purple scarf", "female", ["purple", "scarf"]),  # no purple in this model's colours
])
def test_free_text_is_read_onto_the_vocabulary_and_unknown_words_are_named(text, read, unknown):
    r = read_free_text(text, NATIVE)
    assert (r.query, r.unknown) == (read, unknown)
    assert len(parse_query(r.query, NATIVE_NAMES, NATIVE_GROUPS)) == len(r.conditions)


def _sliver_probs() -> tuple[np.ndarray, np.ndarray]:
    """A wall sliver (raw P(U_red) 0.19, every other colour near 0) and a person in red (P(U_red) 0.8)."""
    sliver, person = np.full(len(NATIVE_NAMES), 0.05), np.full(len(NATIVE_NAMES), 0.05)
    for p, red in ((sliver, 0.19), (person, 0.8)):
        p[[4, 6]] = 0.0075  # U_black, U_Others
        p[5] = red
        p[NATIVE_NAMES.index("Backpack")], p[NATIVE_NAMES.index("Hat")] = 0.9, 0.1
        p[NATIVE_NAMES.index("Age_adult")] = 0.9
    return sliver, person


@pytest.mark.parametrize("group_argmax", [False, True])
def test_a_score_and_the_labels_shown_never_disagree(group_argmax):
    sliver, person = _sliver_probs()
    terms = parse_query("upper_colour=red, Backpack, not Hat", NATIVE_NAMES, NATIVE_GROUPS)
    for p in (sliver, person):
        labels = {lab["key"]: lab for lab in labels_with_confidence(p, NATIVE_NAMES, NATIVE_GROUPS, 0.5, group_argmax)}
        red = float(term_probability(p, terms[0], group_argmax)[0])
        shown = labels["upper_colour"]
        assert (shown["value"] == "U_red") == (red >= 0.5 or (group_argmax and np.argmax(p[4:7]) == 1))
        if shown["value"] == "U_red":
            assert shown["p"] == pytest.approx(red, abs=1e-4)  # the confidence shown is the term's probability
    if not group_argmax:  # threshold decoding: the sliver is not red, and its score says so
        assert float(term_probability(sliver, terms[0])[0]) == pytest.approx(0.19)
    rng = np.random.default_rng(0)
    for p in rng.uniform(0, 1, (300, len(NATIVE_NAMES))):  # the rule on random outputs
        labels = {lab["key"]: lab["value"] for lab in labels_with_confidence(p, NATIVE_NAMES, NATIVE_GROUPS, 0.5,
                                                                            group_argmax)}
        for i, attr in enumerate(["U_black", "U_red", "////U_Others////"]):
            prob = float(term_probability(p, parse_query(f"upper_colour={attr}", NATIVE_NAMES, NATIVE_GROUPS)[0],
                                          group_argmax)[0])
            assert prob < 0.5 or labels["upper_colour"] == attr
            if not group_argmax:
                assert (prob >= 0.5) == (labels["upper_colour"] == attr)


def _tracks_json(folder: Path, probs: list[np.ndarray]) -> tuple[Path, Path]:
    """A fake video file and its tracks JSON (one track per probability vector), decoded by threshold."""
    from tools.inference.labels import LabelDecoder

    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "wall.mp4"
    video.write_bytes(b"not really a video, but content to hash")
    dec = LabelDecoder(NATIVE_NAMES, NATIVE_GROUPS, 0.5, group_argmax=False)
    tracks = [{"track_id": i + 1, "first_frame": 1, "last_frame": 25, "frames_seen": 25, "frames": [], "boxes": [],
               "probs": dict(zip(NATIVE_NAMES, map(float, p))), "labels": dec.decode(p),
               "label_text": dec.text(dec.decode(p))} for i, p in enumerate(probs)]
    data = {"video": str(video), "status": "complete", "video_info": {"fps": 25.0}, "attr_names": NATIVE_NAMES,
            "groups": NATIVE_GROUPS, "tracks": tracks, "thumbs": {}, "frames": 25, "outputs": {}}
    path = folder / "wall_tracks.json"
    path.write_text(json.dumps(data))
    return video, path


def test_the_wall_sliver_ranks_below_the_person_in_red_everywhere(tmp_path):
    from cctv.search import run_search

    sliver, person = _sliver_probs()
    video, js = _tracks_json(tmp_path / "v", [sliver, person])
    query = "upper_colour=red, Backpack, not Hat"
    cfg = get_cfg_defaults()
    cfg.SEARCH.IN, cfg.SEARCH.QUERY, cfg.SEARCH.OUTPUT = str(js), query, str(tmp_path / "s")
    rows = run_search(cfg)["results"]
    index = open_index(str(tmp_path / "f.sqlite"), create=True)
    model = ModelInfo("c" * 64, "native", NATIVE_NAMES, NATIVE_GROUPS, [0.5] * len(NATIVE_NAMES), False)
    ing = VideoIngestor(index, model, "wall", "2026-03-01T08:00:00")
    assert ing.begin(video) and ing.finish(video, js) is not None
    results = Searcher(index).search(Request(query))["results"]
    for got in (rows, results):
        assert [r["track_id"] for r in got] == [2, 1]
        assert got[1]["terms"]["upper_colour=red"] == pytest.approx(0.19) and got[1]["score"] == pytest.approx(
            0.19 * 0.9 * 0.9, rel=1e-4)
    shown = {lab["key"]: lab for lab in results[1]["labels"]}
    assert shown["upper_colour"]["value"] == "none" and shown["upper_colour"]["p"] == pytest.approx(0.81)
    assert {lab["key"]: lab["value"] for lab in results[0]["labels"]}["upper_colour"] == "U_red"


def _crop(path: Path, bgr: tuple) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((100, 40, 3), bgr, np.uint8)
    img[::7] = 255  # some texture
    cv2.imwrite(str(path), img)
    return path


def test_search_by_example_with_a_task_reid_checkpoint(tmp_path):
    """Tracks (JSON and index) and a crop folder, with a checkpoint that has embeddings and no attributes."""
    from cctv.app import process_videos
    from cctv.search import run_search
    from tests._index_helpers import video_cfg
    from tools.inference import Predictor

    ckpt = make_reid_checkpoint(tmp_path / "reid.pth")
    video, det = make_video(tmp_path / "cam")
    spec = str(tmp_path / "footage.sqlite")
    cfg = video_cfg(video, det, tmp_path / "out", spec, "cam", "2026-03-01T10:00:00")
    cfg.TEST.PRETRAINED_WEIGHTS, cfg.DEVICE = str(ckpt), "cpu"
    reid = Predictor.from_checkpoint(ckpt, device="cpu")
    process_videos(cfg, predictor=reid)
    example = _crop(tmp_path / "example.png", (0, 0, 255))  # red, like the red walker
    cfg.SEARCH.EXAMPLE, cfg.SEARCH.OUTPUT = str(example), str(tmp_path / "s")
    for source in (spec, str(tmp_path / "out")):  # the index, then the tracks JSON
        cfg.SEARCH.IN = source
        rows = run_search(cfg, predictor=reid)["results"]
        assert len(rows) == 2 and all(0.0 <= r["score"] <= 1.0 for r in rows) and rows[0]["score"] > rows[1]["score"]
    best = run_search(cfg, predictor=reid)["results"][0]
    index_rows = Searcher(open_index(spec)).search(Request(limit=5, example=_stored(spec, 1)[0]))["results"]
    assert index_rows[0]["id"] == 1 and index_rows[0]["score"] == pytest.approx(1.0, abs=2e-3)
    crops = tmp_path / "crops"
    _crop(crops / "red.png", (0, 0, 255)), _crop(crops / "blue.png", (255, 0, 0))
    cfg.SEARCH.IN = str(crops)
    rows = run_search(cfg, predictor=reid)["results"]
    assert [r["image"] for r in rows][0] == "red.png" and rows[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert best["track_id"] in (7, 9, 1, 2)


def _stored(spec: str, track: int):
    from cctv.index.commands import stored_example

    return stored_example(open_index(spec), track)


POSTGRES = os.environ.get("PAR_TEST_POSTGRES_URL", "")
QUERIES = [Request("colour=red", limit=10), Request("woman, no hat", cameras=["lobby"]),
           Request("male, eyewear=Sunglasses", after=1772352000.0 + 1800), Request("", min_seconds=2.5, limit=3),
           Request("Backpack", min_score=0.3)]


def _comparable(answer: dict) -> list:
    return [(r["camera"], Path(r["video"]).name, r["track_id"], r["start_time"], r["score"], r["labels"])
            for r in answer["results"]]


@pytest.mark.skipif(not POSTGRES, reason="no PostgreSQL server: set PAR_TEST_POSTGRES_URL (.ci/run starts Debian's "
                                         "postgresql package and sets it)")
def test_sqlite_and_postgresql_hold_and_return_the_same(tmp_path):
    pg = open_index(POSTGRES, create=True)
    metadata.drop_all(pg.writer)  # a fresh schema for this test
    pg.close()
    ingest_two_cameras(tmp_path / "pg", POSTGRES, media=str(tmp_path / "pg_media"))
    ingest_two_cameras(tmp_path / "lite", str(tmp_path / "footage.sqlite"))
    assert dump(POSTGRES) == dump(str(tmp_path / "footage.sqlite"))
    on_pg, on_lite = Searcher(open_index(POSTGRES)), Searcher(open_index(str(tmp_path / "footage.sqlite")))
    for req in QUERIES:
        a, b = on_pg.search(req), on_lite.search(req)
        assert a["query"] == b["query"] and _comparable(a) == _comparable(b) and a["results"], req
    ingest_two_cameras(tmp_path / "pg", POSTGRES, media=str(tmp_path / "pg_media"))  # again: one copy
    assert len(dump(POSTGRES)["tracks"]) == 4
    with pytest.raises(QueryError, match="cannot be opened"):
        open_index(POSTGRES.rsplit("/", 1)[0] + "/no_such_database")
