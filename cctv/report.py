"""A static, browsable page of one processed video's tracks: ``<stem>_report/index.html``.

One self-contained file (inline CSS and JS, thumbnails as data URIs, no server, nothing fetched):
a card per track with its best crop, time span and decoded labels, and one drop-down per attribute
group / attribute that filters the cards in the page. The filter lives in the URL hash
(``index.html#upper_colour=U_red&Backpack=yes``), so a filtered view can be bookmarked or shared.

    uv run python -m cctv.report exp_results/videos/clip_tracks.json   # (re)write the page
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import logging
from pathlib import Path

from tools.inference.labels import BINARY_DISPLAY, NONE, _short_names

log = logging.getLogger(__name__)

CSS = """
body{font:14px system-ui,sans-serif;margin:16px;background:#f4f4f4;color:#222}
h1{font-size:20px;margin:0 0 4px} .meta{color:#555;margin-bottom:10px}
#filters{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0;padding:8px;background:#fff;border-radius:6px}
#filters label{display:flex;flex-direction:column;font-size:12px;color:#555}
#cards{display:flex;flex-wrap:wrap;gap:10px}
.card{width:170px;background:#fff;border-radius:6px;padding:6px;box-shadow:0 1px 2px #0002}
.card[hidden]{display:none} .thumb{height:192px;display:flex;align-items:center;justify-content:center;background:#ddd}
.thumb img{max-width:100%;max-height:192px} .id{font-weight:600} .span{font-size:12px;color:#555}
.chip{display:inline-block;background:#e6eefc;border-radius:9px;padding:1px 7px;margin:2px 2px 0 0;font-size:12px}
.none{color:#999;font-size:12px}
"""

JS = """
const tracks = JSON.parse(document.getElementById('tracks-data').textContent);
const selects = Array.from(document.querySelectorAll('select[data-key]'));
function apply() {
  const want = {};
  selects.forEach(s => { if (s.value) want[s.dataset.key] = s.value; });
  let shown = 0;
  for (const t of tracks) {
    const ok = Object.entries(want).every(([k, v]) => t.f !== null && t.f[k] === v);
    document.getElementById('t' + t.id).hidden = !ok;
    if (ok) shown++;
  }
  document.getElementById('shown').textContent = shown;
  const hash = new URLSearchParams(want).toString();
  try { history.replaceState(null, '', hash ? '#' + hash : location.pathname + location.search); } catch (e) {}
}
function fromHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  selects.forEach(s => { s.value = p.get(s.dataset.key) || ''; if (s.selectedIndex < 0) s.value = ''; });
  apply();
}
selects.forEach(s => s.addEventListener('change', apply));
document.getElementById('clear').addEventListener('click', () => { selects.forEach(s => s.value = ''); apply(); });
window.addEventListener('hashchange', fromHash);
fromHash();
"""


def _filter_fields(data: dict) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(key, label, [(value, shown text)]) per drop-down: groups, two-way attributes, other attributes."""
    groups = [(g[0], g[1], list(g[2:])) for g in data.get("groups", [])]
    grouped = {a for _, _, attrs in groups for a in attrs}
    fields = []
    for name, kind, attrs in groups:
        values = list(zip(attrs, _short_names(attrs))) + ([(NONE, NONE)] if kind == "optional" else [])
        fields.append((name, name, values))
    for a in data.get("attr_names", []):
        if a in grouped:
            continue
        if a in BINARY_DISPLAY:
            fields.append((a, "/".join(BINARY_DISPLAY[a]), [(v, v) for v in BINARY_DISPLAY[a]]))
        else:
            fields.append((a, a, [("yes", "yes"), ("no", "no")]))
    return fields


def track_facets(track: dict, fields: list) -> dict[str, str] | None:
    """The values the page filters on (``None`` for a track never classified)."""
    labels = track.get("labels")
    if labels is None:
        return None
    present = set(labels.get("present", []))
    out = {}
    for key, _, values in fields:
        if key in labels:
            out[key] = str(labels[key])
        elif [v for v, _ in values] == ["yes", "no"]:
            out[key] = "yes" if key in present else "no"
    return out


def _clock(frame: int | None, fps: float) -> str:
    if frame is None:
        return "?"
    t = (frame - 1) / fps
    return f"{int(t // 60)}:{t % 60:04.1f}"


def _thumb_html(data: dict, track_id: int, root: Path) -> str:
    entry = data.get("thumbs", {}).get(str(track_id)) or {}
    path = root / entry["file"] if entry.get("file") else None
    if path is None or not path.is_file():
        return '<div class="thumb"><span class="none">no crop</span></div>'
    uri = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<div class="thumb"><img alt="track {track_id}" src="{uri}"></div>'


def _card(data: dict, track: dict, root: Path, fps: float) -> str:
    tid = int(track["track_id"])
    chips = "".join(f'<span class="chip">{html.escape(t)}</span>' for t in track.get("label_text", []))
    if track.get("labels") is None:
        chips = '<span class="none">not classified (too small)</span>'
    span = (f'{_clock(track.get("first_frame"), fps)} – {_clock(track.get("last_frame"), fps)} '
            f'(frames {track.get("first_frame")}–{track.get("last_frame")}, seen {track.get("frames_seen")})')
    return (f'<div class="card" id="t{tid}">{_thumb_html(data, tid, root)}<div class="id">#{tid}</div>'
            f'<div class="span">{html.escape(span)}</div><div>{chips}</div></div>')


def _filters(fields: list) -> str:
    out = []
    for key, label, values in fields:
        opts = '<option value="">any</option>' + "".join(
            f'<option value="{html.escape(v, quote=True)}">{html.escape(t)}</option>' for v, t in values)
        out.append(f'<label>{html.escape(label)}<select data-key="{html.escape(key, quote=True)}">{opts}</select>'
                   "</label>")
    return "".join(out) + '<button id="clear" type="button">clear filters</button>'


def _video_html(data: dict) -> str:
    """The annotated video beside the report's folder (``--mode video`` writes it as H.264, which browsers play)."""
    name = Path(str((data.get("outputs") or {}).get("video") or "")).name
    if not name:
        return ""
    src = html.escape("../" + name)
    return (f'<div class="meta"><video controls muted preload="metadata" src="{src}" width="640"></video><br>'
            f'<a href="{src}">annotated video</a></div>')


def render_report(data: dict, root: Path) -> str:
    """The page for a loaded ``<stem>_tracks.json`` whose thumbnails are relative to ``root``."""
    fields = _filter_fields(data)
    info = data.get("video_info", {})
    fps = float(info.get("fps") or 25.0)
    tracks = data.get("tracks", [])
    facets = [{"id": int(t["track_id"]), "f": track_facets(t, fields)} for t in tracks]
    title = Path(str(data.get("video", "video"))).name
    meta = (f'{data.get("frames", "?")} frames, {info.get("width", "?")}×{info.get("height", "?")} at {fps:g} fps; '
            f'detector {data.get("detector", "?")}; status {data.get("status", "?")}')
    payload = json.dumps(facets).replace("</", "<\\/")
    cards = "".join(_card(data, t, root, fps) for t in tracks)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} – tracks</title>'
            f'<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>'
            f'<div class="meta">{html.escape(meta)}</div>'
            f'<div class="meta"><span id="shown">{len(tracks)}</span> of {len(tracks)} tracks shown</div>'
            f'{_video_html(data)}<div id="filters">{_filters(fields)}</div><div id="cards">{cards}</div>'
            f'<script id="tracks-data" type="application/json">{payload}</script><script>{JS}</script>'
            '</body></html>')


def write_report(tracks_json: str | Path, out_html: str | Path | None = None) -> Path:
    """Render ``<stem>_tracks.json`` to ``out_html`` (default ``<stem>_report/index.html`` beside it)."""
    src = Path(tracks_json)
    data = json.loads(src.read_text(encoding="utf-8"))
    stem = src.name[: -len("_tracks.json")] if src.name.endswith("_tracks.json") else src.stem
    out = Path(out_html) if out_html else src.parent / f"{stem}_report" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(data, src.parent), encoding="utf-8")
    log.info("report: %s (%d tracks)", out, len(data.get("tracks", [])))
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description="Write the browsable HTML report of a processed video")
    ap.add_argument("tracks_json", help="a <stem>_tracks.json written by the video pipeline")
    ap.add_argument("--out", default=None, help="output .html (default <stem>_report/index.html beside it)")
    a = ap.parse_args()
    write_report(a.tracks_json, a.out)
