"""``--mode serve``: a local web app on a footage index.

    uv run run.py --config-file C --mode serve SEARCH.IN exp_results/footage.sqlite

Pages: ``/`` (search box, filters, results grid) and ``/track/<id>`` (the track's clip, labels, "more like
this"); their HTML / JS / CSS are package files (nothing fetched from elsewhere: works offline). JSON API:
``GET /api/search?q=&camera=&after=&before=&limit=&min_seconds=&min_score=&attrs=&like=`` ->
``{"query": <as read>, "unknown": [...], "results": [{"camera", "video", "track_id", "start_time", "end_time",
"score", "labels", "thumbnail", ...}]}``; ``/api/vocabulary``, ``/api/track/<id>``. Media are served only from
the index: ``/media/thumb/<track id>`` (the JPEG stored in the index) and ``/media/video/<video id>`` (the
H.264 file the index names in its own media folder); nothing is read from a path taken from the request.

Access: the server binds SERVE.HOST (127.0.0.1 by default); any other address needs SERVE.TOKEN, which every
request must then carry (``Authorization: Bearer <token>``, or ``?token=<token>`` once: it sets a cookie).
"""

import hmac
import logging
import os
import socket
from pathlib import Path
from typing import Any

from configs.errors import UserError

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
COOKIE = "par_token"
MAX_LIMIT = 500


class ServeError(UserError, ValueError):
    """A serve setting that cannot be used; the message names the key and the fix."""


def check_bind(host: str, token: str) -> None:
    """A non-local address without a token is refused before anything listens."""
    if host not in LOCAL_HOSTS and not token:
        raise ServeError(f"SERVE.HOST {host} would let other machines in: set SERVE.TOKEN (or env PAR_SERVE_TOKEN) to "
                         "an access token, or keep SERVE.HOST 127.0.0.1")


def _is_id(text: str) -> bool:
    """A database id from a URL: ASCII digits only (``str.isdigit`` accepts '²'), within a 64-bit integer."""
    return text.isascii() and text.isdigit() and len(text) < 19


def _authorised(request: Any, token: str) -> bool:
    given = request.headers.get("authorization", "")
    given = given[7:] if given.lower().startswith("bearer ") else ""
    given = given or request.cookies.get(COOKIE, "") or request.query_params.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


def _token_middleware(app: Any, token: str) -> None:
    from starlette.responses import JSONResponse

    @app.middleware("http")
    async def guard(request, call_next):  # every request: pages, API and media alike
        if token and not _authorised(request, token):
            return JSONResponse({"error": "unauthorised: give the access token (SERVE.TOKEN)"}, status_code=401)
        response = await call_next(request)
        if token and request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; media-src 'self'; "
                                                       "style-src 'self'; script-src 'self'")
        return response


def _time(value: str, key: str) -> float | None:
    from cctv.index.ingest import parse_time

    return parse_time(value, key) if value.strip() else None


def search_request(params: dict) -> Any:
    """The query string of ``/api/search`` as a ``Request`` (values are data, never SQL)."""
    from cctv.index.search import Request

    try:
        limit = max(1, min(MAX_LIMIT, int(params.get("limit") or 50)))
        min_seconds, min_score = float(params.get("min_seconds") or 0), float(params.get("min_score") or 0)
    except ValueError:
        raise ServeError("limit, min_seconds and min_score must be numbers") from None
    cams = [c.strip() for c in str(params.get("camera") or "").split(",") if c.strip()]
    return Request(text=str(params.get("q") or ""), cameras=cams, after=_time(params.get("after") or "", "after"),
                   before=_time(params.get("before") or "", "before"), min_seconds=min_seconds,
                   min_score=min_score, limit=limit, conditions=str(params.get("attrs") or ""))


def _media_file(index: Any, video_id: str) -> Path | None:
    """The index's own H.264 file of video ``video_id`` (digits only), inside its media folder; else None."""
    from sqlalchemy import select

    from cctv.index.store import videos

    if not _is_id(video_id):
        return None
    with index.engine.connect() as c:
        name = c.execute(select(videos.c.media_file).where(videos.c.id == int(video_id))).scalar()
    if not name:
        return None
    root = index.media.resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def _thumbnail(index: Any, track_id: str) -> bytes | None:
    from sqlalchemy import select

    from cctv.index.store import tracks

    if not _is_id(track_id):
        return None
    with index.engine.connect() as c:
        return c.execute(select(tracks.c.thumbnail).where(tracks.c.id == int(track_id))).scalar()


def _api_routes(app: Any, searcher: Any) -> None:
    from fastapi import Request as HttpRequest
    from fastapi.responses import JSONResponse

    from cctv.vocab import QueryError

    @app.get("/api/search")
    def api_search(request: HttpRequest):
        params = dict(request.query_params)
        try:
            req = search_request(params)
            if str(params.get("like") or "").strip():
                req.example, req.example_model = _like(searcher, str(params["like"]))
            return searcher.search(req)
        except (QueryError, ServeError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)

    @app.get("/api/vocabulary")
    def api_vocabulary():
        return searcher.vocabulary()

    @app.get("/api/track/{track_id}")
    def api_track(track_id: str):
        found = searcher.track(int(track_id)) if _is_id(track_id) else None
        if found is None:
            return JSONResponse({"error": "no such track"}, status_code=404)
        return found


def _like(searcher: Any, track_id: str) -> tuple:
    from cctv.index.commands import stored_example
    from cctv.vocab import QueryError

    if not _is_id(track_id):
        raise QueryError("like: give a track id (digits)")
    return stored_example(searcher.index, int(track_id))


def _media_routes(app: Any, index: Any) -> None:
    from fastapi.responses import FileResponse, JSONResponse, Response

    missing = lambda: JSONResponse({"error": "not found"}, status_code=404)  # noqa: E731

    @app.get("/media/thumb/{track_id}")
    def thumb(track_id: str):
        data = _thumbnail(index, track_id)
        return Response(data, media_type="image/jpeg") if data else missing()

    @app.get("/media/video/{video_id}")
    def video(video_id: str):
        path = _media_file(index, video_id)
        return FileResponse(path, media_type="video/mp4") if path else missing()

    @app.get("/media/{rest:path}")
    def other_media(rest: str):
        return missing()


def _page_routes(app: Any) -> None:
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    def home():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/track/{track_id}")
    def track_page(track_id: str):
        return FileResponse(STATIC / "track.html", media_type="text/html")


def create_app(index_spec: str, media: str = "", token: str = "") -> Any:
    """The FastAPI app on the index at ``index_spec`` (``token``: required on every request)."""
    from fastapi import FastAPI

    from cctv.index.search import Searcher
    from cctv.index.store import open_index

    index = open_index(index_spec, media)
    searcher = Searcher(index)
    searcher.refresh()
    app = FastAPI(title="Footage search", docs_url=None, redoc_url=None, openapi_url=None)
    _token_middleware(app, token)
    if not token:  # local and open: only requests addressed to this machine (no DNS rebinding from a web page)
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"])
    _api_routes(app, searcher)
    _media_routes(app, index)
    _page_routes(app)
    app.state.searcher = searcher
    return app


def run_server(cfg: Any) -> None:
    """``--mode serve``: check the bind, open the index, print the URL, serve until Ctrl-C."""
    import uvicorn

    s = cfg.SERVE
    token = str(s.TOKEN or os.environ.get("PAR_SERVE_TOKEN", ""))
    check_bind(str(s.HOST), token)
    if not str(cfg.SEARCH.IN).strip():
        raise ServeError("SEARCH.IN is empty: give the footage index to serve (an .sqlite file or postgresql:// URL)")
    app = create_app(cfg.SEARCH.IN, cfg.TEST.INDEX_MEDIA, token)
    sock = _listen(str(s.HOST), int(s.PORT))
    host = f"[{s.HOST}]" if ":" in str(s.HOST) else str(s.HOST)
    url = f"http://{host}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    from cctv.index.store import safe_spec

    size = app.state.searcher.size
    print(f"serving {safe_spec(cfg.SEARCH.IN)} ({size} tracks) at {url}  (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({e.strerror}); choose another SERVE.PORT "
                         "(0 = any free)") from None
    sock.listen(128)
    return sock
