"""Fixtures of the footage index tests: clips of two cameras ingested through the video application, a
tiny TASK reid checkpoint, an index dump for comparisons, and a subprocess entry that ingests slowly (to be
killed with SIGKILL mid-video)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from tests._video_helpers import FakeEmbedder, make_video

CAMERAS = {"gate": ("20260301_080000_gate.mp4", 30), "lobby": ("lobby.mp4", 24)}  # file name, frames
LOBBY_START = "2026-03-01T09:00:00"


def clips(root: Path) -> dict[str, tuple[Path, Path]]:
    """camera -> (video, MOT file); the clips differ in length, so in content."""
    return {cam: make_video(root / cam, name, n_frames=n) for cam, (name, n) in CAMERAS.items()}


def video_cfg(video: Path, det: Path, out: Path, index: str, camera: str, start: str = ""):
    from configs.default import get_cfg_defaults

    cfg = get_cfg_defaults()
    cfg.TEST.VIDEO_PATH, cfg.TEST.DETECTOR, cfg.TEST.DET_FILE = str(video), "file", str(det)
    cfg.TEST.OUTPUT_VIDEO_PATH, cfg.TEST.INDEX, cfg.TEST.CAMERA = str(out), index, camera
    cfg.TEST.START_TIME = start
    return cfg


def ingest_two_cameras(root: Path, index: str, predictor=None, media: str = "") -> None:
    """Both clips through ``cctv.app.process_videos`` into ``index`` (gate: start from its file name,
    lobby: TEST.START_TIME)."""
    from cctv.app import process_videos

    for cam, (video, det) in clips(root).items():
        cfg = video_cfg(video, det, root / "out" / cam, index, cam, LOBBY_START if cam == "lobby" else "")
        cfg.TEST.INDEX_MEDIA = media
        process_videos(cfg, predictor=predictor or FakeEmbedder())


def dump(spec: str) -> dict:
    """The index's content without ids or ingest times: what two runs must agree on."""
    from sqlalchemy import select

    from cctv.index.store import cameras, open_index, tracks, videos

    index = open_index(spec)
    with index.engine.connect() as c:
        vids = {r.id: r for r in c.execute(select(videos))}
        cams = dict(c.execute(select(cameras.c.id, cameras.c.name)).all())
        out = {"videos": sorted((Path(v.path).name, v.content_hash, cams[v.camera_id], v.status, v.start_time,
                                 v.start_source, v.n_tracks, v.frames) for v in vids.values()),
               "tracks": sorted((Path(vids[t.video_id].path).name, t.track_id, t.first_frame, t.last_frame,
                                 round(t.start_time, 3), t.labels, t.probs, t.embedding, t.thumbnail)
                                for t in c.execute(select(tracks)))}
    index.close()
    return out


class SlowEmbedder(FakeEmbedder):
    """FakeEmbedder that takes its time: a run can be killed while a video is being processed."""

    def predict_with_embeddings(self, images):
        time.sleep(0.15)
        return super().predict_with_embeddings(images)


def make_reid_checkpoint(path: Path) -> Path:
    """A TASK reid checkpoint (embeddings, no attributes) with its inference contract, untrained."""
    import torch

    from models.build import build_model
    from tests._video_helpers import tiny_cfg
    from tools.checkpoint import save_checkpoint
    from tools.inference.contract import InferenceContract

    cfg = tiny_cfg()
    cfg.TASK, cfg.DATASET.ATTRS, cfg.DATASET.GROUPS = "reid", [], []
    torch.manual_seed(0)
    model = build_model(cfg, 0, num_ids=4).eval()
    mean, std = model.normalisation()
    contract = InferenceContract([], [], 64, 32, list(mean), list(std), [], task="reid",
                                 embed_dim=int(model.embed_dim))
    return save_checkpoint({"model": model.state_dict(), "attr_names": [], "groups": [], "cfg": cfg.dump(),
                            "contract": contract.to_dict(), "epoch": 1, "best_metric": 0.0}, path)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


if __name__ == "__main__":  # python -m tests._index_helpers <root> <index> [slow]: ingest both cameras
    ingest_two_cameras(Path(sys.argv[1]), sys.argv[2], SlowEmbedder() if "slow" in sys.argv[3:] else None)
    print(json.dumps({"done": True}))
