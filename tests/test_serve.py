"""The web app's server on a real socket: the JSON API as documented, media only from the index, and who
may see it (a non-local bind needs a token; every request carries it; no path traversal; a query with SQL
metacharacters is just a query)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests._index_helpers import dump, ingest_two_cameras
from tests.conftest import REPO
from cctv.web.server import ServeError, _listen, check_bind, create_app

TOKEN = "s3cret-token"


class Running:
    """A uvicorn server in a thread on a free port of 127.0.0.1."""

    def __init__(self, spec: str, token: str = ""):
        import uvicorn

        self.sock = _listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(spec, token=token), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("serve")
    ingest_two_cameras(root, str(root / "footage.sqlite"))
    return str(root / "footage.sqlite")


@pytest.fixture(scope="module")
def server(index):
    s = Running(index)
    yield s
    s.stop()


def test_api_search_answers_as_documented(server):
    status, body, _ = get(server.url + "/api/search?q=woman+in+a+red+top+with+an+umbrella&camera=gate&limit=5"
                          "&after=2026-03-01T07:59:00&before=2026-03-01T08:30:00")
    res = json.loads(body)
    assert status == 200 and res["query"] == "female, colour=red" and res["unknown"] == ["umbrella"]
    first = res["results"][0]
    assert {"camera", "video", "track_id", "start_time", "end_time", "score", "labels", "thumbnail"} <= set(first)
    assert (first["camera"], first["start_time"]) == ("gate", "2026-03-01T08:00:00Z") and len(res["results"]) == 2
    assert first["labels"][1] == {"key": "colour", "value": "c_red", "p": pytest.approx(first["terms"]["colour=red"]),
                                  "text": "colour: red"}
    status, thumb, headers = get(server.url + first["thumbnail"])
    assert status == 200 and headers["content-type"] == "image/jpeg" and thumb[:2] == b"\xff\xd8"
    status, clip, headers = get(server.url + first["clip"], {"Range": "bytes=0-99"})
    assert status == 206 and headers["content-type"] == "video/mp4" and len(clip) == 100  # seekable
    status, body, _ = get(server.url + "/api/search?like=" + str(first["id"]) + "&limit=4")
    like = json.loads(body)["results"]
    # the red walker of both cameras has the same (mean colour) embedding: both first, at cosine 1
    assert status == 200 and first["id"] in [r["id"] for r in like[:2]]
    assert [r["appearance"] for r in like[:2]] == pytest.approx([1.0, 1.0], abs=2e-3) and like[2]["appearance"] < 0.9
    status, body, _ = get(server.url + "/api/search?q=Hatt%3Dmaybe")
    assert status == 400 and "unknown" in json.loads(body)["error"]
    status, page, _ = get(server.url + "/")
    assert status == 200 and b"/static/app.js" in page and b"http" not in page.replace(b"http-equiv", b"")


@pytest.mark.parametrize("path", ["/media/thumb/../../../../etc/passwd", "/media/thumb/%2Fetc%2Fpasswd",
                                  "/media/video/..%2F..%2Ffootage.sqlite", "/media/video/%2Fetc%2Fpasswd",
                                  "/media/etc/passwd", "/media/video/999", "/media/thumb/1.jpg",
                                  "/static/../run.py", "/static/%2e%2e/%2e%2e/run.py"])
def test_media_only_from_the_index_by_id(server, path):
    req = urllib.request.Request(server.url + path)
    req.full_url = server.url + path  # keep ../ as written (urllib does not normalise it)
    status, body, _ = get(req.full_url)
    assert status == 404, (path, body[:200])


def test_a_query_with_sql_metacharacters_is_just_a_query(server, index):
    before = dump(index)
    for q in ("Hat'; DROP TABLE tracks; --", "colour=red\" OR 1=1 --",
              "female, colour=red) UNION SELECT * FROM videos"):
        status, body, _ = get(server.url + "/api/search?" + urllib.parse.urlencode({"q": q, "camera": "x' OR '1'='1"}))
        assert status in (200, 400) and isinstance(json.loads(body), dict), q
    query = urllib.parse.urlencode({"q": "colour=red", "camera": "' OR 1=1 --"})
    status, body, _ = get(server.url + "/api/search?" + query)
    assert status == 200 and json.loads(body)["results"] == []  # a camera of that name: there is none
    assert dump(index) == before


def test_a_token_is_checked_on_every_request(index):
    s = Running(index, token=TOKEN)
    try:
        for path in ("/", "/api/search?q=colour%3Dred", "/media/thumb/1", "/media/video/1", "/static/app.js",
                     "/track/1"):
            assert get(s.url + path)[0] == 401, path
            assert get(s.url + path, {"Authorization": "Bearer wrong"})[0] == 401, path
            assert get(s.url + path, {"Authorization": f"Bearer {TOKEN}"})[0] == 200, path
        status, _, headers = get(s.url + f"/?token={TOKEN}")
        cookie = headers["set-cookie"].split(";")[0]
        assert status == 200 and get(s.url + "/media/thumb/1", {"Cookie": cookie})[0] == 200
    finally:
        s.stop()


def test_a_non_local_bind_needs_a_token():
    check_bind("127.0.0.1", "")
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(ServeError, match="SERVE.TOKEN"):
        check_bind("0.0.0.0", "")
    res = subprocess.run([sys.executable, "run.py", "--config-file", "configs/native_lite0.yaml", "--mode", "serve",
                          "SEARCH.IN", "x.sqlite", "SERVE.HOST", "0.0.0.0"], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "set SERVE.TOKEN" in res.stderr


def test_an_open_local_server_answers_only_requests_addressed_to_this_machine(server):
    # DNS rebinding: a web page whose domain now resolves to 127.0.0.1 sends its own name as Host
    assert get(server.url + "/api/search?q=female", {"Host": "attacker.example"})[0] == 400
    assert get(server.url + "/api/search?q=female", {"Host": "localhost"})[0] == 200


@pytest.mark.parametrize("track_id", ["²", "9" * 30])
def test_odd_ids_are_not_found_not_a_server_error(server, track_id):
    assert get(server.url + "/media/thumb/" + urllib.parse.quote(track_id))[0] == 404
