"""The one way to load a checkpoint for inference: ``load_for_inference(path)``.

``--mode eval``, the Python predictor, ``--mode predict``, video, search and the ONNX export all
build their model here: the checkpoint's own config rebuilds the architecture (no pretrained
files are read), its weights are loaded strictly, and its inference contract sets the input
normalisation and the logits -> probabilities step.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
import yaml
from yacs.config import CfgNode as CN

from configs.default import get_cfg_defaults
from models.tta import unwrapped
from tools import results
from tools.checkpoint import CheckpointError, load_checkpoint
from tools.inference.contract import ContractModel, InferenceContract, guessed_contract

log = logging.getLogger(__name__)

# Keys that must not follow the checkpoint's run: weights come from the checkpoint itself, and
# inference never needs the fine-tuning freeze.
_INFERENCE_OVERRIDES = {("MODEL", "PRETRAINED"): "none", ("MODEL", "VIT_PRETRAINED"): "none",
                        ("FINETUNE", "MODE"): "full"}


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: ``model(x)`` gives probabilities (eval mode, on ``device``)."""

    model: ContractModel
    contract: InferenceContract
    cfg: CN
    path: Path
    device: torch.device

    @property
    def net(self) -> torch.nn.Module:
        """The PARModel / ReIDModel giving logits and embeddings (flip-averaged when the contract says so)."""
        return self.model.model

    def with_flip(self, flip: bool) -> "LoadedModel":
        """This model with TEST.FLIP asked at evaluation: itself when ``flip`` is off or its contract already
        flips; otherwise the same weights flip-averaged (logged: its decisions were chosen without the flip)."""
        if not flip or self.contract.flip:
            return self
        log.warning("TEST.FLIP True: %s was trained without the flip (its thresholds / tau were chosen on "
                    "unflipped validation crops); scoring it with crop and mirror averaged as asked", self.path)
        contract = replace(self.contract, flip=True)
        return replace(self, model=ContractModel(unwrapped(self.net), contract).to(self.device).eval(),
                       contract=contract)


def _merge_known(node: CN, data: dict, prefix: str = "") -> list[str]:
    """Merge ``data`` onto ``node``, keeping only keys the current schema knows (returns the rest)."""
    dropped = []
    for k, v in data.items():
        if k not in node:
            dropped.append(prefix + k)
        elif isinstance(node[k], CN):
            if isinstance(v, dict):
                dropped += _merge_known(node[k], v, f"{prefix}{k}.")
        else:
            node[k] = v
    return dropped


def inference_cfg(cfg: CN) -> CN:
    """A frozen copy of ``cfg`` that builds the same model without reading pretrained files."""
    cfg = cfg.clone()
    cfg.defrost()
    for (section, key), value in _INFERENCE_OVERRIDES.items():
        cfg[section][key] = value
    cfg.freeze()
    return cfg


def cfg_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> CN:
    """The run's config stored in the checkpoint, on today's defaults (unknown old keys are ignored)."""
    text = ckpt.get("cfg")
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError(f"{path} has no 'cfg' text; it was not written by this framework's trainer")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: its 'cfg' text is not valid YAML ({str(e).splitlines()[0]})") from None
    cfg = get_cfg_defaults()
    dropped = _merge_known(cfg, data)
    if dropped:
        log.info("%s: config keys unknown to this version ignored: %s", path, ", ".join(dropped))
    _legacy_branch_defaults(cfg)
    return cfg


# Schema defaults before MODEL.BACKBONE / MODEL.VIT became "": a c2t preset read them as "the preset's".
_OLD_DEFAULTS = {"BACKBONE": "resnet18", "VIT": "eva_large_patch14_196.mim_m38m"}


def _legacy_branch_defaults(cfg: CN) -> None:
    if cfg.MODEL.NAME.startswith("c2t"):
        for key, old in _OLD_DEFAULTS.items():
            if cfg.MODEL[key] == old:
                cfg.MODEL[key] = ""


def experiment_dir(cfg: CN) -> Path:
    """<OUTPUT_DIR>/<DATASET.NAME>/<TEST.MODEL_FOLDER_NAME or NAME>: the experiment inference reads from."""
    return results.experiment_dir(cfg, cfg.TEST.MODEL_FOLDER_NAME or None)


def resolve_checkpoint(cfg: CN) -> Path:
    """TEST.PRETRAINED_WEIGHTS, else the experiment's best_model.pth; ``CheckpointError`` naming the keys."""
    if cfg.TEST.PRETRAINED_WEIGHTS:
        p = Path(cfg.TEST.PRETRAINED_WEIGHTS)
        if not p.is_file():
            raise CheckpointError(f"TEST.PRETRAINED_WEIGHTS: checkpoint '{p}' not found; give an existing .pth file")
        return p
    p = experiment_dir(cfg) / "best_model.pth"
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p}; train first, or set TEST.MODEL_FOLDER_NAME (experiment "
                              "folder) or TEST.PRETRAINED_WEIGHTS (a .pth file)")
    return p


@contextmanager
def _quiet(logger_names: Sequence[str]) -> Iterator[None]:
    """Silence build-time notices that are wrong at inference ("starts from RANDOM weights")."""
    loggers = [logging.getLogger(n) for n in logger_names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _strip_prefixes(state: dict) -> dict:
    """Weights saved from DDP (``module.``) or torch.compile (``_orig_mod.``) wrappers."""
    out = {}
    for k, v in state.items():
        for p in ("module.", "_orig_mod."):
            while k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _build_net(cfg: CN, num_attrs: int, path: Path, num_ids: int = 0) -> torch.nn.Module:
    import models  # noqa: F401  (registers every backbone)
    from models.build import build_model

    try:
        with _quiet(("models.pretrained", "models.freeze", "models.c2t.c2tnet")):
            return build_model(inference_cfg(cfg), num_attrs, num_ids)
    except Exception as e:  # an unknown backbone name etc.: say which checkpoint asked for it
        raise CheckpointError(f"{path}: cannot rebuild its model {cfg.MODEL.NAME}/{cfg.MODEL.BACKBONE} "
                              f"({type(e).__name__}: {str(e)[:200]})") from None


def _load_weights(net: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        missing, unexpected = net.load_state_dict(_strip_prefixes(state), strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        detail = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e)[:160])
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({detail[:200]})") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected keys, e.g. {(list(missing) + list(unexpected))[:3]})")


def read_contract(ckpt: dict, cfg: CN, path: Path) -> InferenceContract:
    """The checkpoint's contract, or (old checkpoints) a logged best guess from its config."""
    if isinstance(ckpt.get("contract"), dict):
        return InferenceContract.from_dict(ckpt["contract"])
    return guessed_contract(cfg, ckpt, str(path))


def load_for_inference(path: str | Path, device: str | torch.device = "cpu", trusted: bool = False) -> LoadedModel:
    """Rebuild, load and wrap a checkpoint of this framework; ``CheckpointError`` says what does not fit."""
    path = Path(path)
    ckpt = load_checkpoint(path, trusted=trusted)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path} holds no 'model' state dict; pass a best_model.pth / last.pth of this framework")
    cfg = cfg_from_checkpoint(ckpt, path)
    if not ckpt.get("attr_names") and not ("attr_names" in ckpt and cfg.TASK == "reid"):  # reid: no attributes
        raise CheckpointError(f"{path} has no 'attr_names'; it was not written by this framework's trainer")
    contract = read_contract(ckpt, cfg, path)
    if list(contract.attr_names) != list(ckpt["attr_names"]):
        raise CheckpointError(f"{path}: its contract and its weights name different attributes; re-save it")
    from models.reid_model import identity_classes  # reid / multitask: the classifier's identity count

    net = _build_net(cfg, len(contract.attr_names), path, identity_classes(ckpt["model"]))
    _load_weights(net, ckpt["model"], path)
    net.set_normalisation(contract.mean, contract.std)
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if contract.channels_last:  # the memory format training ran in: the same kernels, the same numbers
        net.to(memory_format=torch.channels_last)
    model = ContractModel(net, contract).to(dev).eval()
    log.info("loaded %s: %s/%s, %d attributes, input %dx%d, mean %s, on %s", path, cfg.MODEL.NAME,
             cfg.MODEL.BACKBONE, len(contract.attr_names), contract.height, contract.width,
             [round(m, 3) for m in contract.mean], dev)
    return LoadedModel(model, contract, inference_cfg(cfg), path, dev)
