"""The video application: PAR on video (``--mode video``) and on a folder of person crops (``--mode predict``).

    uv run run.py --config-file configs/native.yaml --mode video TEST.VIDEO_PATH ../shared/videos

The checkpoint is TEST.PRETRAINED_WEIGHTS, else
<OUTPUT_DIR>/<DATASET.NAME>/<TEST.MODEL_FOLDER_NAME or NAME>/best_model.pth.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from yacs.config import CfgNode as CN

from dataset.base import DataError
from tools.inference import Predictor, experiment_dir, read_rgb
from tools.inference.onnx import runtime_predictor
from cctv.detectors import DetectorError, resolve_detector_name
from cctv.index.ingest import ingestor_from_cfg
from cctv.pipeline import VideoError, VideoOptions, list_videos, output_paths, process_video

log = logging.getLogger("video")
plog = logging.getLogger("predict")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _console_logging() -> None:
    """run.py leaves logging to each mode: show INFO (the per-video summary) unless someone set it up."""
    if not logging.getLogger().handlers:
        from tools.results import setup_logging

        setup_logging(None, console=True)


def process_videos(cfg: CN, predictor: Predictor | None = None) -> list[dict]:
    """Process TEST.VIDEO_PATH (one file, or every video of a folder / TEST.VIDEO_NAME in it).

    One bad video in a folder is logged and skipped; a single bad file raises its ``VideoError``.
    Ctrl-C stops after the current video's outputs are flushed and returns what was done.
    """
    _console_logging()
    videos = list_videos(cfg.TEST.VIDEO_PATH, cfg.TEST.VIDEO_NAME)
    single = Path(cfg.TEST.VIDEO_PATH).is_file() or bool(cfg.TEST.VIDEO_NAME)  # the user named this one video
    opts = VideoOptions.from_cfg(cfg)
    opts.validate()
    opts.detector = resolve_detector_name(opts.detector, opts.yolo_model)
    # ssdlite / hog / yolo are built once, with every TEST.* option (and fail before the model loads);
    # a file detector is per video
    shared_det = None if opts.detector == "file" else opts.make_detector()
    predictor = predictor or runtime_predictor(Predictor.from_cfg(cfg), cfg.TEST.PAR_RUNTIME)
    out_dir = Path(cfg.TEST.OUTPUT_VIDEO_PATH)
    summaries: list[dict] = []
    skipped: list[str] = []
    index = ingestor_from_cfg(cfg, predictor)  # TEST.INDEX: the footage index ("" = none)
    for video in videos:
        if index is not None and not index.begin(video):
            log.info("%s: already in the footage index %s with this checkpoint; skipped", video, cfg.TEST.INDEX)
            continue
        try:
            summaries.append(process_video(video, predictor, opts, out_dir, detector=shared_det))
            _playable(summaries[-1])
            if index is not None:
                index.finish(video, output_paths(video, out_dir)["json"])
        except (VideoError, DetectorError) as e:
            if single:
                raise
            log.warning("skipped %s: %s", video.name, e)
            skipped.append(video.name)
        except KeyboardInterrupt:
            js = output_paths(video, out_dir)["json"]
            log.warning("interrupted by the user: %s was stopped; outputs written so far are kept in %s",
                        video.name, out_dir)
            if js.is_file():
                data = json.loads(js.read_text(encoding="utf-8"))
                summaries.append({k: v for k, v in data.items() if k not in ("tracks", "attr_names", "groups")})
            break
    _log_done(summaries, skipped, out_dir)
    return summaries


def _log_done(summaries: list[dict], skipped: list[str], out_dir: Path) -> None:
    """The final summary line: counts, videos that did not finish (status) and videos skipped, by name."""
    if not summaries and not skipped:
        return
    unfinished = [f"{Path(s['video']).name} ({s['status']}, {s['frames']} of {s.get('frames_expected') or '?'} frames)"
                  for s in summaries if s.get("status") not in (None, "complete")]
    log.info("video done: %d video(s), %d frames, %d people tracked%s%s; outputs in %s", len(summaries),
             sum(s["frames"] for s in summaries), sum(s["people_tracked"] for s in summaries),
             f"; not complete: {', '.join(unfinished)}" if unfinished else "",
             f"; skipped {len(skipped)}: {', '.join(skipped)}" if skipped else "", out_dir)


def _playable(summary: dict) -> None:
    """The annotated video re-encoded as H.264 (OpenCV's mp4v is not played by browsers; the report links it)."""
    from cctv.index.media import make_playable

    video = (summary.get("outputs") or {}).get("video")
    if video and Path(video).is_file() and not make_playable(Path(video)):
        log.warning("%s stays mp4v (browsers will not play it)", video)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def predict_folder(cfg: CN, predictor: Predictor | None = None) -> dict:
    """TEST.PREDICT_PATH (a folder of person crops, searched recursively) -> CSV of probabilities + labels.

    Columns: ``image`` (path relative to the folder), ``labels`` (decoded, "; "-joined), one
    probability per attribute. Unreadable images are logged and skipped.
    """
    _console_logging()
    folder = Path(cfg.TEST.PREDICT_PATH)
    if not cfg.TEST.PREDICT_PATH or not folder.is_dir():
        raise DataError(f"TEST.PREDICT_PATH: '{cfg.TEST.PREDICT_PATH}' is not a folder; give a folder of person crops")
    images = _list_images(folder)
    if not images:
        raise DataError(f"TEST.PREDICT_PATH: no images ({', '.join(IMAGE_EXTS)}) in {folder}")
    predictor = predictor or Predictor.from_cfg(cfg)
    out = Path(cfg.TEST.PREDICT_CSV) if cfg.TEST.PREDICT_CSV else experiment_dir(cfg) / "predictions.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    decoder = predictor.decoder  # the checkpoint's thresholds and group decoding
    skipped, done = [], 0
    step = max(1, cfg.TEST.BATCH_SIZE)
    with open(out, "w", newline="", encoding="utf-8") as f:
        rows = csv.writer(f)
        rows.writerow(["image", "labels", *predictor.attr_names])
        for i in range(0, len(images), step):
            batch, names = [], []
            for p in images[i:i + step]:
                try:
                    batch.append(read_rgb(p))
                    names.append(p.relative_to(folder).as_posix())
                except DataError as e:
                    plog.warning("skipped %s", e)
                    skipped.append(str(p))
            if not batch:
                continue
            for name, prob in zip(names, predictor.predict_images(batch)):
                # %.9g round-trips float32: the CSV holds exactly what the model computed
                rows.writerow([name, "; ".join(decoder.text(decoder.decode(prob))), *(f"{v:.9g}" for v in prob)])
            done += len(batch)
    plog.info("predicted %d image(s) from %s -> %s (%d unreadable skipped)", done, folder, out, len(skipped))
    return {"csv": str(out), "images": done, "skipped": skipped}
