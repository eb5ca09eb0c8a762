"""Untrusted files run no code: pickled objects in checkpoints, python tags in YAML, image IDs that
climb out of the image folder."""
from __future__ import annotations

import os
import re
import sys

import pytest
import torch

from tests.robustness._helpers import REPO, load, make_native, native_overrides, the_error_line, tiny_yaml, write_yaml
from tools.checkpoint import CheckpointError, load_checkpoint


class _Payload:
    """Unpickling this calls os.mkdir(marker): proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def evil_checkpoint(reference, tmp_path):
    """A real best_model.pth with one extra entry that runs code when fully unpickled."""
    marker = tmp_path / "code_ran"
    ck = load_checkpoint(reference / "best_model.pth")
    ck["extra"] = _Payload(str(marker))
    path = tmp_path / "downloaded.pth"
    torch.save(ck, path)
    return path, marker


def test_checkpoint_with_pickled_code_is_refused_unless_trusted(evil_checkpoint):
    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and "RELOAD.TRUSTED" in msg and "refused for safety" in msg
    assert "GLOBAL posix.mkdir" in msg  # the offending callable is named
    assert not marker.exists()
    load_checkpoint(path, trusted=True)  # the explicit opt-in for a legacy file you trust
    assert marker.is_dir()


def test_eval_of_an_untrusted_checkpoint_prints_one_line(evil_checkpoint, reference, monkeypatch, capsys):
    import run

    path, marker = evil_checkpoint
    monkeypatch.setattr(sys, "argv", ["run.py", "--config-file", str(reference / "config.yaml"), "--mode", "eval",
                                      "TEST.PRETRAINED_WEIGHTS", str(path), "REDIRECTOR", "False"])
    assert run.cli() == 2
    assert "RELOAD.TRUSTED" in the_error_line(capsys.readouterr().err)
    assert not marker.exists()


def test_reload_of_an_untrusted_checkpoint_is_refused(evil_checkpoint, tiny):
    from tools.engine import run_training as train

    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError, match="RELOAD.TRUSTED"):
        train(load(tiny(NAME="reload"), "RELOAD.TYPE", "True", "RELOAD.PTH", str(path)))
    assert not marker.exists()


def test_every_torch_load_is_weights_only_and_yaml_is_safe():
    """A source scan, so a new torch.load / yaml.load cannot slip in unnoticed."""
    offenders = []
    for f in REPO.rglob("*.py"):
        rel = f.relative_to(REPO)
        if rel.parts[0] in (".venv", "tests") or "site-packages" in rel.parts:
            continue
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            code = line.split("#")[0]
            if "torch.load(" in code and "weights_only=True" not in code:
                if not (str(rel) == "tools/checkpoint.py" and "weights_only=False" in code):  # the TRUSTED branch
                    offenders.append(f"{rel}:{n}: {line.strip()}")
            if re.search(r"yaml\.(load|unsafe_load|full_load)\(|Loader=yaml\.(Loader|UnsafeLoader|FullLoader)", code):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_yaml_with_a_python_tag_is_refused(tmp_path, synth_root):
    marker = tmp_path / "yaml_code_ran"
    cfg_file = tiny_yaml(tmp_path, synth_root)
    text = cfg_file.read_text().replace("NAME: rb", f"NAME: !!python/object/apply:os.mkdir ['{marker}']")
    cfg_file.write_text(text)
    from configs import ConfigError

    with pytest.raises(ConfigError) as e:
        load(cfg_file)
    assert str(cfg_file) in str(e.value) and "python/object/apply:os.mkdir" in str(e.value)
    # the same through _BASE_ inheritance and through a checkpoint's stored config text
    child = write_yaml(tmp_path / "child.yaml", {"_BASE_": cfg_file.name, "NAME": "child"})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(child)
    from tools.inference import cfg_from_checkpoint

    with pytest.raises(CheckpointError, match="'cfg' text is not valid YAML"):
        cfg_from_checkpoint({"cfg": text}, "x.pth")
    # on the command line the text stays a plain string
    assert load(tiny_yaml(tmp_path, synth_root), "NAME", f"!!python/object/apply:os.mkdir ['{marker}']").NAME.startswith("!!")
    assert not marker.exists()


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "/etc/passwd", "c1_v1_0_0/../../../outside"])
def test_image_id_leaving_the_image_folder_is_rejected(tmp_path, synth_root, bad_id):
    from dataset import DataError, build_data

    sheet, images, _ = make_native(tmp_path / "native", {bad_id: None}, n_tubes=4)
    cfg = load(tiny_yaml(tmp_path, synth_root, **native_overrides(sheet, images)))
    with pytest.raises(DataError) as e:
        build_data(cfg)
    assert f"image ID '{bad_id}' resolves outside the image folder" in str(e.value)
