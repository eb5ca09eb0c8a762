"""The footage index: two cameras' clips ingested by the video application, searched across both with
camera / time / duration filters; one copy per file and checkpoint; a run killed with SIGKILL mid-video
and re-run equals an uninterrupted one; the command-line search on the index (a new result folder per
query, the query as read); the front door answers a wrong index or an unknown word without torch."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._index_helpers import dump, ingest_two_cameras
from tests.conftest import REPO
from cctv.index.search import Request, Searcher
from cctv.index.store import open_index
from cctv.vocab import QueryError

GATE_START = 1772352000.0  # 2026-03-01T08:00:00Z, from the file name 20260301_080000_gate.mp4


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two_cameras")
    ingest_two_cameras(root, str(root / "footage.sqlite"))
    return root


def _searcher(root: Path) -> Searcher:
    return Searcher(open_index(str(root / "footage.sqlite")))


def _hits(answer: dict) -> list[tuple[str, int]]:
    return [(r["camera"], r["track_id"]) for r in answer["results"]]


def test_two_cameras_in_one_index_with_wall_clock_times(indexed):
    d = dump(str(indexed / "footage.sqlite"))
    assert [(v[0], v[2], v[3], v[5], v[6], v[7]) for v in d["videos"]] == [
        ("20260301_080000_gate.mp4", "gate", "complete", "filename", 2, 30),
        ("lobby.mp4", "lobby", "complete", "key", 2, 24)]
    assert {v[0]: v[4] for v in d["videos"]} == {"20260301_080000_gate.mp4": GATE_START,
                                                  "lobby.mp4": GATE_START + 3600}
    media = list((indexed / "footage.sqlite.media").glob("*.mp4"))
    assert len(media) == 2 and all(m.stat().st_size > 1000 for m in media)
    import av

    annotated = indexed / "out" / "gate" / "20260301_080000_gate_annotated.mp4"
    for video in (media[0], annotated):  # the index's copy and the annotated video are H.264, which browsers play
        with av.open(str(video)) as c:
            assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].frames in (24, 30)
    report = (indexed / "out" / "gate" / "20260301_080000_gate_report" / "index.html").read_text()
    assert '<video controls muted preload="metadata" src="../20260301_080000_gate_annotated.mp4"' in report


def test_search_across_both_cameras_with_camera_and_time_filters(indexed):
    s = _searcher(indexed)
    everyone = s.search(Request("colour=red", limit=10))
    assert everyone["query"] == "colour=red" and len(everyone["results"]) == 4
    assert [h[0] for h in _hits(everyone)[:2]] in (["gate", "lobby"], ["lobby", "gate"])  # the two red tracks first
    assert all(r["labels"][1]["text"] == "colour: red" for r in everyone["results"][:2])
    lobby = s.search(Request("colour=red", cameras=["lobby"], limit=10))
    assert {h[0] for h in _hits(lobby)} == {"lobby"} and len(lobby["results"]) == 2
    first = lobby["results"][0]
    assert first["start_time"] == "2026-03-01T09:00:00Z" and first["end_time"] == "2026-03-01T09:00:02Z"
    morning = s.search(Request("colour=red", before=GATE_START + 1800, limit=10))
    assert {h[0] for h in _hits(morning)} == {"gate"}
    late = s.search(Request("colour=red", after=GATE_START + 3600, limit=10))
    assert {h[0] for h in _hits(late)} == {"lobby"}
    window = s.search(Request("colour=red", after=GATE_START + 10, before=GATE_START + 3599, limit=10))
    assert window["results"] == []
    long = s.search(Request("colour=red", min_seconds=2.5, limit=10))  # gate 3.0 s (30 frames at 10 fps), lobby 2.4 s
    assert {h[0] for h in _hits(long)} == {"gate"}


def test_the_same_file_twice_gives_one_copy(indexed, tmp_path):
    before = dump(str(indexed / "footage.sqlite"))
    ingest_two_cameras(indexed, str(indexed / "footage.sqlite"))  # same files, same checkpoint: skipped
    assert dump(str(indexed / "footage.sqlite")) == before


def _wait_for(predicate, seconds: float = 120.0) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _incomplete(spec: str) -> bool:
    from sqlalchemy import select

    from cctv.index.store import videos

    if not Path(spec).is_file():
        return False
    try:
        index = open_index(spec)
        with index.engine.connect() as c:
            rows = c.execute(select(videos.c.path, videos.c.status)).all()
        index.close()
    except QueryError:
        return False
    return any(s == "incomplete" and "lobby" in p for p, s in rows)  # the second video is being processed


def test_kill_9_mid_video_then_rerun_equals_an_uninterrupted_run(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    spec = str(killed / "footage.sqlite")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tests._index_helpers", str(killed), spec, "slow"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: _incomplete(spec)), proc.stderr.read().decode()[-2000:] if proc.poll() else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    half = dump(spec)
    assert [(v[0], v[3]) for v in half["videos"]] == [("20260301_080000_gate.mp4", "complete"),
                                                      ("lobby.mp4", "incomplete")]
    assert not any(t[0] == "lobby.mp4" for t in half["tracks"])  # an incomplete video has no tracks
    assert Searcher(open_index(spec)).search(Request("colour=red", cameras=["lobby"]))["results"] == []
    ingest_two_cameras(killed, spec)  # the re-run: gate is skipped, lobby replaced
    ingest_two_cameras(clean, str(clean / "footage.sqlite"))
    got, want = dump(spec), dump(str(clean / "footage.sqlite"))
    assert got == want and len(got["videos"]) == 2 and len(got["tracks"]) == 4


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "run.py", "--config-file", "configs/native_lite0.yaml", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_command_line_search_on_the_index_writes_a_new_folder_per_query(indexed, tmp_path):
    out = tmp_path / "results"
    args = ["--mode", "search", "SEARCH.IN", str(indexed / "footage.sqlite"), "SEARCH.OUTPUT", str(out),
            "SEARCH.QUERY", "woman in a red top, no hat", "SEARCH.CAMERA", "gate"]
    first, second, third = _run(*args), _run(*args, "SEARCH.NAME", "red"), _run(*args, "SEARCH.NAME", "red")
    assert first.returncode == 0 and second.returncode == third.returncode == 0, first.stderr[-2000:]
    folders = sorted((p for p in out.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    assert [p.name for p in folders[1:]] == ["red", "red-2"]  # a new folder per query, never over the last one
    assert folders[0].name.endswith("_woman_in_a_red_top_no_hat")
    js = json.loads((folders[0] / "search.json").read_text())
    assert js["read_as"] == "female, colour=red, not Hat" and js["query"] == "woman in a red top, no hat"
    assert [(r["camera"], r["track_id"]) for r in js["results"]][:1] == [("gate", 1)]
    assert (folders[0] / "search.csv").read_text().count("\n") == 3 and (folders[0] / "search_top.png").is_file()
    assert "read as 'female, colour=red, not Hat'" in first.stdout + first.stderr


def test_the_front_door_answers_without_torch(indexed, tmp_path):
    """A wrong index and an unknown word are one-line errors found before torch (or any model) is imported."""
    code = ("import sys, run; from configs import load_config; from cctv.search import run_search\n"
            "from configs.errors import UserError\n"
            "for q, src in (('Hat', sys.argv[1] + '/missing.sqlite'), ('Hatt', sys.argv[1] + '/footage.sqlite')):\n"
            "    opts = ['SEARCH.IN', src, 'SEARCH.QUERY', q, 'MODE', 'search']\n"
            "    cfg = load_config('configs/native_lite0.yaml', opts)\n"
            "    try: run_search(cfg)\n"
            "    except UserError as e: print(type(e).__name__, str(e))\n"
            "print('torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code, str(indexed)], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("QueryError footage index") and "missing.sqlite' does not exist" in lines[0]
    assert lines[1].startswith("QueryError unknown word(s) 'hatt'") and "Hat" in lines[1]
    assert lines[2] == "False", res.stderr[-2000:]
    missing = _run("--mode", "search", "SEARCH.IN", str(tmp_path / "nope.sqlite"), "SEARCH.QUERY", "Hat", timeout=60)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr


def test_two_processes_ingesting_the_same_footage_into_one_index_keep_one_copy(tmp_path):
    spec = str(tmp_path / "footage.sqlite")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests._index_helpers", str(tmp_path / name), spec], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    for p in procs:  # the same clips (same content) from two folders, at the same time
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    d = dump(spec)
    assert [(v[0], v[3], v[6]) for v in d["videos"]] == [("20260301_080000_gate.mp4", "complete", 2),
                                                         ("lobby.mp4", "complete", 2)]
    assert len(d["tracks"]) == 4
