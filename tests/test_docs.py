"""The READMEs tell the truth about the code: every config file, mode, config key and script module they
name exists, and the front README stays short enough to read top to bottom."""
from __future__ import annotations

import re

import pytest

from configs.default import get_cfg_defaults
from run import MODES
from tests.conftest import REPO

DOCS = ["README.md", "cctv/README.md", "configs/README.md", "exp_results/README.md"]
KEY = re.compile(r"(?<![\w.])((?:TEST|SEARCH|TRAIN|DATASET|MODEL|LOSS|METRIC|RELOAD|REID|STAGE2|FINETUNE|VIS|DIST|"
                 r"OUTPUT|DEVICE|TASK)(?:\.[A-Z0-9_]+)+)")


def _text(doc: str) -> str:
    return (REPO / doc).read_text(encoding="utf-8")


def _has_key(dotted: str) -> bool:
    node = get_cfg_defaults()
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("doc", DOCS)
def test_every_config_file_named_exists(doc):
    named = set(re.findall(r"(?:--config-file|--base)\s+(configs/[\w/.-]+\.yaml)", _text(doc)))
    named |= set(re.findall(r"`(configs/[\w/-]+\.yaml)`", _text(doc)))
    assert named or doc != "README.md"
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert missing == [], f"{doc} names config files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_mode_named_is_a_mode_of_run_py(doc):
    named = {m for group in re.findall(r"--mode\s+([a-z|]+)", _text(doc)) for m in group.split("|") if m}
    assert named <= set(MODES), f"{doc} names modes run.py does not have: {sorted(named - set(MODES))}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_config_key_named_exists(doc):
    text = re.sub(r"unknown config key '[^']*'", "", _text(doc))  # the typo the docs show on purpose
    named = set(KEY.findall(text))
    missing = sorted(k for k in named if not _has_key(k))
    assert missing == [], f"{doc} names config keys configs/default.py does not define: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_script_module_named_exists(doc):
    modules = set(re.findall(r"python -m ([\w.]+)", _text(doc)))
    files = set(re.findall(r"python ((?:scripts/)?[\w]+\.py)", _text(doc)))
    modules = {m for m in modules if not m.split(".")[-1].isupper()}  # scripts.NAME: a placeholder
    missing = sorted(m for m in modules if not (REPO / (m.replace(".", "/") + ".py")).is_file())
    missing += sorted(f for f in files if not (REPO / f).is_file())
    assert missing == [], f"{doc} names modules or scripts that do not exist: {missing}"


def test_the_front_readme_is_short_and_links_the_other_documents():
    text = _text("README.md")
    assert len(text.splitlines()) < 300
    for doc in ("configs/README.md", "exp_results/README.md", "cctv/README.md"):
        assert f"]({doc}" in text, f"README.md does not link {doc}"
    assert not re.search(r"\b(issue|session) \d+", text, re.IGNORECASE), "development history in README.md"


def test_documented_facts_match_the_code():
    from cctv.detectors import resolve_detector_name
    from tools.inference.onnx import INPUT, OUTPUT

    for doc in ("README.md", "cctv/README.md"):
        text = _text(doc)
        if "ONNX" in text:
            assert f"output `{OUTPUT}`" in text and f"`{INPUT}`" in text, f"{doc}: the ONNX input/output names"
    assert resolve_detector_name("auto", "") == "ssdlite" and resolve_detector_name("auto", "y.pt") == "yolo"
    assert "`auto` (the default: yolo when `TEST.YOLO_MODEL` is set, else `ssdlite`)" in _text("cctv/README.md")
    assert get_cfg_defaults().TEST.DETECTOR == "auto"
