"""ONNX export of a checkpoint under its inference contract, checked against PyTorch with onnxruntime.

Input ``images``: (N, 3, H, W) float32 RGB in [0, 1]. Output ``probs``: (N, A), what
``Predictor.predict_images`` returns: normalisation, post-hoc logit adjustment and sigmoid are
inside the graph. A TASK reid checkpoint outputs ``embeddings`` (N, D) instead (the post-BNNeck
feature; compare with cosine or Euclidean distance as REID.METRIC says), a multitask one both
``probs`` and ``embeddings``. The whole contract is stored as JSON in the metadata (``contract``), with
``attr_names``, ``groups``, ``input_height`` and ``input_width`` also as separate keys.

``OnnxPredictor`` is a ``Predictor`` whose network runs in onnxruntime (2-3x faster than PyTorch on
small CPU batches, measured with ``scripts.benchmark_inference``); ``onnx_for_checkpoint`` exports a
checkpoint once and reuses the file while the checkpoint is unchanged. The video pipeline picks its
runtime with TEST.PAR_RUNTIME (``runtime_predictor``); eval and ``--mode predict`` stay on PyTorch, so
their probabilities equal training's exactly.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from configs.errors import UserError
from tools.inference.predictor import Predictor

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # the dynamo exporter's minimum; run by any onnxruntime >= 1.14
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf caps a single file at 2 GB: bigger weights go to a .data file
INPUT, OUTPUT, EMBEDDINGS = "images", "probs", "embeddings"


class ExportError(UserError, RuntimeError):
    """The model could not be exported or the exported graph disagrees with PyTorch."""


def output_names(task: str) -> list[str]:
    """The graph's outputs for a contract's TASK: par probs, reid embeddings, multitask both."""
    return {"reid": [EMBEDDINGS], "multitask": [OUTPUT, EMBEDDINGS]}.get(task, [OUTPUT])


class WithEmbeddings(torch.nn.Module):
    """A multitask ContractModel with both outputs: (probabilities, embeddings)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x), self.model.embed(x)


def _export(model: torch.nn.Module, x: torch.Tensor, out: Path, opset: int, external: bool, *,
            outputs: Sequence[str] = (OUTPUT,)) -> None:
    names = {"input_names": [INPUT], "output_names": list(outputs)}
    try:
        torch.onnx.export(model, (x,), str(out), dynamo=True, opset_version=opset, external_data=external,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), verbose=False, **names)
        return
    except Exception as e:  # some graphs only go through the older TorchScript exporter
        log.warning("dynamo ONNX export failed (%s: %s); retrying with the TorchScript exporter",
                    type(e).__name__, str(e).splitlines()[0][:160] if str(e) else "")
    torch.onnx.export(model, (x,), str(out), dynamo=False, opset_version=opset,
                      dynamic_axes={n: {0: "batch"} for n in (INPUT, *outputs)}, **names)


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path), load_external_data=False)  # external weights stay where they are
    for k, v in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(m, str(path))


def verify_onnx(model: torch.nn.Module, onnx_path: str | Path, height: int, width: int, *,
                batch_sizes: Sequence[int] = (1, 3), atol: float = 1e-4, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| over random batches of each size; ``ExportError`` above ``atol``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    model = model.eval().cpu()
    worst = 0.0
    for b in batch_sizes:
        x = torch.rand(b, 3, height, width, generator=gen)
        with torch.inference_mode():
            refs = model(x)
        refs = refs if isinstance(refs, tuple) else (refs,)  # every output, in graph order
        for ref, got in zip((r.float().numpy() for r in refs), sess.run(None, {INPUT: x.numpy()})):
            if got.shape != ref.shape:
                raise ExportError(f"{onnx_path}: batch {b} gives shape {got.shape}, PyTorch {ref.shape}")
            worst = max(worst, float(np.abs(got - ref).max()))
    if worst > atol:
        raise ExportError(f"{onnx_path}: onnxruntime differs from PyTorch by {worst:.2e} (> {atol:g})")
    return worst


def _metadata(predictor: Predictor) -> dict[str, str]:
    c = predictor.contract
    described = {OUTPUT: f"{OUTPUT}: (N, A) probabilities (normalisation, adjustment and sigmoid included)",
                 EMBEDDINGS: f"{EMBEDDINGS}: (N, {c.embed_dim}) ReID embeddings (post-BNNeck; rank by REID.METRIC)"}
    return {"contract": json.dumps(c.to_dict()), "attr_names": json.dumps(c.attr_names),
            "groups": json.dumps(c.groups), "input_height": str(c.height), "input_width": str(c.width),
            "input": f"{INPUT}: float32 (N, 3, H, W) RGB in [0, 1], resized with {c.resize}",
            "output": "; ".join(described[n] for n in output_names(c.task)),
            "thresholds": json.dumps(c.thresholds), "task": c.task, "outputs": json.dumps(output_names(c.task))}


def _write_onnx(predictor: Predictor, out: Path, opset: int, *, verify: bool = True, atol: float = 1e-4,
                metadata: dict[str, str]) -> str:
    """Export, add the metadata, verify at batch 1 and 3; returns how it was verified (for the log)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    model = predictor.model.cpu().float().eval()
    outputs = output_names(predictor.contract.task)
    if len(outputs) > 1:
        model = WithEmbeddings(model).eval()
    x = torch.rand(2, 3, predictor.height, predictor.width)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        with torch.no_grad():
            _export(model, x, out, opset, external=n_bytes > EXTERNAL_DATA_BYTES, outputs=outputs)
    except Exception as e:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: {str(e)[:200]}") from None
    _add_metadata(out, {**_metadata(predictor), **metadata})
    if not verify:
        return "not verified"
    try:
        diff = verify_onnx(model, out, predictor.height, predictor.width, atol=atol)
    except ImportError:
        log.warning("onnxruntime is not installed: the ONNX export is not verified (uv sync --group dev)")
        return "not verified"
    return f"verified with onnxruntime: max |diff| {diff:.2e} at batch 1 and 3"


def _log_exported(predictor: Predictor, out: Path, opset: int, how: str) -> None:
    log.info("exported %s (%d attributes, input %dx%d, opset %d; %s)", out, len(predictor.attr_names),
             predictor.height, predictor.width, opset, how)


def export_onnx(predictor: Predictor, out: str | Path, opset: int = DEFAULT_OPSET, verify: bool = True,
                atol: float = 1e-4, *, metadata: dict[str, str] | None = None) -> Path:
    """Write ``out`` from a loaded ``Predictor`` (model on CPU, fp32); verified at batch 1 and 3."""
    out = Path(out)
    how = _write_onnx(predictor, out, opset, verify=verify, atol=atol, metadata=metadata or {})
    _log_exported(predictor, out, opset, how)
    return out


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stored_sha1(path: Path) -> str | None:
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # a truncated or foreign file: export again
        return None
    return next((p.value for p in m.metadata_props if p.key == "checkpoint_sha1"), None)


def _cache_path(checkpoint: Path, sha1: str) -> Path:
    """``<checkpoint>.onnx`` beside it, or a temporary folder where that folder is read-only."""
    if os.access(checkpoint.parent, os.W_OK):
        return checkpoint.with_suffix(".onnx")
    return Path(tempfile.gettempdir()) / "par_onnx" / f"{checkpoint.stem}_{sha1[:16]}.onnx"


def onnx_for_checkpoint(predictor: Predictor) -> Path:
    """The ONNX file of ``predictor``'s checkpoint: reused while its stored checkpoint sha1 matches, else
    exported (and verified within 1e-4 of PyTorch) with that sha1 in its metadata."""
    ckpt = Path(predictor.loaded.path)
    sha1 = _sha1(ckpt)
    path = _cache_path(ckpt, sha1)
    if path.is_file() and _stored_sha1(path) == sha1:
        log.info("PAR runtime onnx: reusing %s", path)
        return path
    log.info("PAR runtime onnx: exporting %s to %s (once per checkpoint)", ckpt, path)
    tmp = path.with_name(path.stem + ".partial.onnx")
    how = _write_onnx(predictor, tmp, DEFAULT_OPSET, metadata={"checkpoint_sha1": sha1})
    os.replace(tmp, path)  # never leave a half-written file under the reused name
    _log_exported(predictor, path, DEFAULT_OPSET, how)
    return path


class OnnxPredictor(Predictor):
    """A ``Predictor`` (same contract, preprocessing and decoder) whose network runs in onnxruntime on the
    CPU; its probabilities are within 1e-4 of PyTorch's, not bit-identical."""

    def __init__(self, predictor: Predictor, onnx_path: str | Path, threads: int = 0):
        super().__init__(predictor.loaded, predictor.batch_size)
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        # idle pool threads sleep instead of spinning: on a CPU shared with the video detector's thread (or
        # a training), spinning workers steal the cores the other work needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.onnx_path = Path(onnx_path)
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])

    runtime = "onnx"

    def _run(self, names: list[str], batch: torch.Tensor) -> list[np.ndarray]:
        return self.session.run(names, {INPUT: batch.detach().cpu().numpy()})

    def forward(self, batch: torch.Tensor) -> np.ndarray:
        return self._run([OUTPUT], batch)[0]

    def embed_forward(self, batch: torch.Tensor) -> np.ndarray:
        return self._run([EMBEDDINGS], batch)[0]

    def forward_both(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.contract.task == "reid":  # its graph has no probs output
            emb = self.embed_forward(batch)
            return np.zeros((len(emb), 0), np.float32), emb
        probs, emb = self._run([OUTPUT, EMBEDDINGS], batch)
        return probs, emb


def runtime_predictor(predictor: Predictor, runtime: str) -> Predictor:
    """TEST.PAR_RUNTIME: ``torch`` keeps ``predictor``; ``onnx`` runs it in onnxruntime; ``auto`` picks onnx
    for a PAR model on the CPU when onnxruntime is installed (falling back to torch, with a warning, where
    the export fails)."""
    if runtime == "torch":
        return predictor
    usable = predictor.device.type == "cpu" and predictor.contract.task != "reid"
    if runtime == "auto" and not usable:
        log.info("PAR runtime: torch (TEST.PAR_RUNTIME auto uses onnx only for attribute models on a CPU; "
                 "this one is %s on %s)", predictor.contract.task, predictor.device.type)
        return predictor
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if runtime == "onnx":
            raise ExportError("TEST.PAR_RUNTIME onnx needs onnxruntime: uv sync --group dev "
                              "(or pip install onnxruntime), or set TEST.PAR_RUNTIME torch") from None
        log.warning("PAR runtime: torch, not onnx (onnxruntime is not installed: uv sync --group dev, or set "
                    "TEST.PAR_RUNTIME torch to silence this)")
        return predictor
    try:
        return OnnxPredictor(predictor, onnx_for_checkpoint(predictor))
    except ExportError as e:
        if runtime == "onnx":
            raise
        log.warning("PAR runtime: torch, not onnx (%s)", e)
        return predictor
