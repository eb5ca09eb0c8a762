"""Attribute search: query parsing against attribute names and groups, ranking of tracks of several
processed videos and of a crop folder against hand-computed joint probabilities, outputs, one-line errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from configs.default import get_cfg_defaults
from tests._video_helpers import ATTRS, GROUPS, FakeEmbedder, FakePredictor
from configs.errors import UserError
from cctv.search import QueryError, parse_query, run_search

NATIVE_NAMES = ["Age_young", "Age_adult", "Age_old", "Gender_female", "U_black", "U_red", "////U_Others////",
                "L_black", "L_red", "Backpack", "Glasses", "Sunglasses", "Hat"]
NATIVE_GROUPS = [["age", "exclusive", "Age_young", "Age_adult", "Age_old"],
                 ["upper_colour", "exclusive", "U_black", "U_red", "////U_Others////"],
                 ["lower_colour", "exclusive", "L_black", "L_red"], ["eyewear", "optional", "Glasses", "Sunglasses"]]
QUERY = "female, colour=red, Backpack, not Hat"
# ATTRS = c_red c_green c_blue Glasses Sunglasses Gender_female Hat Backpack; colour is exclusive
TRACKS = {  # video -> track id -> probabilities, and the query's joint probability by hand
    "a": {1: ([0.6, 0.2, 0.2, 0.1, 0.1, 0.9, 0.2, 0.5], 0.9 * 0.6 * 0.5 * 0.8),  # 0.216
          2: ([0.3, 0.3, 0.4, 0.1, 0.1, 0.5, 0.1, 0.9], 0.5 * 0.3 * 0.9 * 0.9)},  # 0.1215
    "b": {5: ([0.4, 0.1, 0.1, 0.1, 0.1, 0.8, 0.5, 0.5], 0.8 * (0.4 / 0.6) * 0.5 * 0.5),  # 0.1333: red normalised
          6: ([0.1, 0.8, 0.1, 0.1, 0.1, 0.1, 0.9, 0.1], 0.1 * 0.1 * 0.1 * 0.1)},
}


def _tracks_json(folder: Path, stem: str, tracks: dict, with_thumbs: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    entries, thumbs = [], {}
    for tid, (p, _) in tracks.items():
        entries.append({"track_id": tid, "first_frame": 11, "last_frame": 60, "frames_seen": 50, "n_classified": 50,
                        "probs": dict(zip(ATTRS, p)), "labels": {}, "label_text": ["x"]})
        if with_thumbs:
            (folder / f"{stem}_thumbs").mkdir(exist_ok=True)
            cv2.imwrite(str(folder / f"{stem}_thumbs" / f"{tid}.jpg"), np.full((100, 40, 3), 40 * tid % 255, np.uint8))
            thumbs[str(tid)] = {"file": f"{stem}_thumbs/{tid}.jpg", "frame": 20}
    entries.append({"track_id": 77, "first_frame": 1, "last_frame": 2, "probs": None, "labels": None})  # unclassified
    data = {"video": f"/videos/{stem}.mp4", "video_info": {"fps": 10.0}, "attr_names": ATTRS, "groups": GROUPS,
            "tracks": entries, "thumbs": thumbs}
    path = folder / f"{stem}_tracks.json"
    path.write_text(json.dumps(data))
    return path


def _cfg(src: str, query: str, out: Path, top_k: int = 20):
    cfg = get_cfg_defaults()
    cfg.SEARCH.IN, cfg.SEARCH.QUERY, cfg.SEARCH.OUTPUT, cfg.SEARCH.TOP_K = src, query, str(out), top_k
    return cfg


def test_parse_a_query_written_as_a_person_would():
    terms = parse_query("female, upper_colour=red, Backpack, not Hat", NATIVE_NAMES, NATIVE_GROUPS)
    assert [(t.kind, t.index, t.negate) for t in terms] == [("attr", 3, False), ("member", 5, False),
                                                            ("attr", 9, False), ("attr", 12, True)]
    assert terms[1].exclusive and terms[1].group == (4, 5, 6) and terms[1].text == "upper_colour=red"
    # case, full / short / decorated member names, negation spellings, display pairs, optional "none"
    for q in ("FEMALE", "Gender_female=yes", "gender_female", "not male", "Gender_female=female"):
        t = parse_query(q, NATIVE_NAMES, NATIVE_GROUPS)[0]
        assert (t.kind, t.index, t.negate) == ("attr", 3, False), q
    male = parse_query("male", NATIVE_NAMES, NATIVE_GROUPS)[0]
    assert (male.index, male.negate) == (3, True)
    for q, idx in (("Upper_Colour = U_RED", 5), ("U_red", 5), ("upper_colour=others", 6), ("age=adult", 1)):
        t = parse_query(q, NATIVE_NAMES, NATIVE_GROUPS)[0]
        assert (t.kind, t.index) == ("member", idx), q
    neg = parse_query("upper_colour!=red, !Hat, -Backpack, Hat=no", NATIVE_NAMES, NATIVE_GROUPS)
    assert [t.negate for t in neg] == [True, True, True, True]
    none = parse_query("eyewear=none", NATIVE_NAMES, NATIVE_GROUPS)[0]
    assert none.kind == "none" and none.group == (10, 11)
    glasses = parse_query("Glasses", NATIVE_NAMES, NATIVE_GROUPS)[0]
    assert (glasses.kind, glasses.index, glasses.exclusive) == ("member", 10, False)


@pytest.mark.parametrize("query, message", [
    ("femal", "unknown attribute 'femal'"),
    ("upper_colour=purple", "unknown value 'purple' for group upper_colour; valid: black, red, Others"),
    ("red", "'red' is a value of several groups (upper_colour, lower_colour)"),
    ("eyewear", "'eyewear' is a group: write eyewear=<value>"),
    ("Hat=maybe", "unknown value 'maybe' for attribute Hat; valid: yes, no"),
    ("age=none", "unknown value 'none' for group age"),
    (" , ", "SEARCH.QUERY is empty"),
])
def test_unknown_names_are_one_line_errors_listing_the_valid_ones(query, message):
    with pytest.raises(QueryError) as e:
        parse_query(query, NATIVE_NAMES, NATIVE_GROUPS)
    text = str(e.value)
    assert message in text and "\n" not in text and isinstance(e.value, UserError)
    if "unknown attribute" in message:
        assert "upper_colour=black|red|Others" in text and "female/male" in text and "Backpack" in text


def test_tracks_of_two_videos_ranked_by_hand_computed_scores(tmp_path):
    _tracks_json(tmp_path / "videos", "a", TRACKS["a"])
    _tracks_json(tmp_path / "videos" / "day2", "b", TRACKS["b"], with_thumbs=False)
    out = run_search(_cfg(str(tmp_path / "videos"), QUERY, tmp_path / "search", top_k=3))
    want = sorted(((s, v, t) for v, tr in TRACKS.items() for t, (_, s) in tr.items()), reverse=True)
    assert out["n_candidates"] == 4  # the unclassified tracks are left out
    got = [(r["score"], Path(r["video"]).stem, r["track_id"]) for r in out["results"]]
    assert [g[1:] for g in got] == [w[1:] for w in want[:3]] == [("a", 1), ("b", 5), ("a", 2)]
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want[:3]], rtol=1e-6)
    best = out["results"][0]
    assert best["terms"] == {"female": 0.9, "colour=red": 0.6, "Backpack": 0.5, "not Hat": 0.8}
    assert (best["time_start_s"], best["time_end_s"], best["rank"]) == (1.0, 5.9, 1)
    with open(out["outputs"]["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[0]["track_id"] == "1" and float(rows[0]["score"]) == pytest.approx(0.216)
    assert rows[0]["P(not Hat)"] == "0.8" and rows[0]["thumb"].endswith("a_thumbs/1.jpg") and rows[1]["thumb"] == ""
    js = json.loads(Path(out["outputs"]["json"]).read_text())
    assert js["query"] == QUERY and js["terms"] == ["female", "colour=red", "Backpack", "not Hat"]
    assert len(js["results"]) == 3 and js["n_candidates"] == 4
    sheet = cv2.imread(out["outputs"]["png"])
    assert sheet.shape == (256 + 34, 3 * 128, 3)
    assert abs(int(sheet[128, 64, 0]) - 40) <= 3  # the first cell holds track a/1's crop (grey level 40)


def test_folder_of_crops_through_a_predict_callable(tmp_path):
    crops = tmp_path / "crops"
    (crops / "cam1").mkdir(parents=True)
    for name, bgr in (("red.png", (0, 0, 255)), ("cam1/blue.png", (255, 0, 0)), ("green.png", (0, 255, 0))):
        cv2.imwrite(str(crops / name), np.full((64, 32, 3), bgr, np.uint8))
    (crops / "broken.jpg").write_text("not an image")
    out = run_search(_cfg(str(crops), "colour=blue, male", tmp_path / "s"), predictor=FakePredictor())
    res = out["results"]
    assert [r["image"] for r in res] == ["cam1/blue.png", "green.png", "red.png"] and res[0]["kind"] == "crop"
    # FakePredictor: blue crop -> colour (0, 0, 1), female 0.2; green: colour (0, 1, 0), female 0.8 (red rule)
    assert res[0]["score"] == pytest.approx(1.0 * 0.8) and res[1]["score"] == pytest.approx(0.0, abs=1e-9)


def _with_embeddings(path: Path, embeddings: dict) -> Path:
    data = json.loads(path.read_text())
    for t in data["tracks"]:
        if t["track_id"] in embeddings:
            t["embedding"] = embeddings[t["track_id"]]
    path.write_text(json.dumps(data))
    return path


def test_search_by_example_alone_and_with_a_query_over_tracks_and_crops(tmp_path):
    _with_embeddings(_tracks_json(tmp_path / "v", "a", TRACKS["a"]), {1: [1, 0, 0], 2: [0.6, 0.8, 0]})
    _with_embeddings(_tracks_json(tmp_path / "v", "b", TRACKS["b"]), {5: [0, 1, 0]})  # track 6: none
    example = tmp_path / "query.png"
    cv2.imwrite(str(example), np.full((64, 32, 3), (0, 0, 255), np.uint8))  # red: FakeEmbedder -> (255, 0, 0)
    cfg = _cfg(str(tmp_path / "v"), "", tmp_path / "s1")
    cfg.SEARCH.EXAMPLE = str(example)
    out = run_search(cfg, predictor=FakeEmbedder())
    # (1 + cos) / 2 by hand: track 1 cos 1, track 2 cos 0.6, track 5 cos 0; track 6 has no embedding
    assert [(r["track_id"], r["score"]) for r in out["results"]] == [(1, pytest.approx(1.0)), (2, pytest.approx(0.8)),
                                                                      (5, pytest.approx(0.5))]
    assert out["n_candidates"] == 3 and out["results"][1]["appearance"] == 0.8
    cfg.SEARCH.QUERY, cfg.SEARCH.OUTPUT = QUERY, str(tmp_path / "s2")
    both = run_search(cfg, predictor=FakeEmbedder())
    assert [(r["track_id"], r["score"]) for r in both["results"]] == [
        (1, pytest.approx(0.216)), (2, pytest.approx(0.1215 * 0.8)), (5, pytest.approx(0.8 * 0.4 / 0.6 * 0.25 * 0.5))]
    crops = tmp_path / "crops"
    crops.mkdir()
    for name, bgr in (("red.png", (0, 0, 255)), ("blue.png", (255, 0, 0))):
        cv2.imwrite(str(crops / name), np.full((64, 32, 3), bgr, np.uint8))
    cfg.SEARCH.IN, cfg.SEARCH.QUERY, cfg.SEARCH.OUTPUT = str(crops), "", str(tmp_path / "s3")
    res = run_search(cfg, predictor=FakeEmbedder())["results"]
    assert [(r["image"], r["score"]) for r in res] == [("red.png", pytest.approx(1.0)), ("blue.png", pytest.approx(0.5))]
    with pytest.raises(QueryError, match="embedding head"):
        run_search(cfg, predictor=FakePredictor())
    cfg.SEARCH.EXAMPLE = str(tmp_path / "missing.png")
    with pytest.raises(QueryError, match="not a readable image"):
        run_search(cfg, predictor=FakeEmbedder())
    cfg.SEARCH.EXAMPLE, cfg.SEARCH.IN = str(example), str(_tracks_json(tmp_path / "plain", "c", TRACKS["a"]))
    with pytest.raises(QueryError, match="no candidate has an appearance embedding"):
        run_search(cfg, predictor=FakeEmbedder())


def test_bad_inputs(tmp_path):
    with pytest.raises(QueryError, match="SEARCH.IN is empty"):
        run_search(_cfg("", "Hat", tmp_path))
    with pytest.raises(QueryError, match="neither a <stem>_tracks.json nor a folder"):
        run_search(_cfg(str(tmp_path / "nope"), "Hat", tmp_path))
    bad = tmp_path / "x_tracks.json"
    bad.write_text("{not json")
    with pytest.raises(QueryError, match="not a tracks JSON"):
        run_search(_cfg(str(bad), "Hat", tmp_path))
    with pytest.raises(QueryError, match="unknown attribute 'Hatt'"):
        run_search(_cfg(str(_tracks_json(tmp_path / "v", "a", TRACKS["a"])), "Hatt", tmp_path))
