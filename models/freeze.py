"""Fine-tuning modes: which parameter groups train. The groups themselves come from the model."""
from __future__ import annotations

import logging

from torch import nn

log = logging.getLogger(__name__)

# The trainable groups of each mode (group names are those of PARModel.param_groups()).
PARTIAL_GROUPS = ("fusion", "head")
HEAD_GROUPS = ("head",)


def trainable_groups(mode: str, groups: list[str], train_ta: bool = False) -> set[str]:
    if mode == "full":
        return set(groups)
    if mode == "partial":
        if "fusion" not in groups:
            raise ValueError("FINETUNE.MODE = partial needs a model with cross-fusion layers (a c2t_* model); "
                             "use full or head for this backbone")
        return set(PARTIAL_GROUPS) | ({"ta"} if train_ta else set())
    if mode == "head":
        return set(HEAD_GROUPS)
    raise ValueError(f"FINETUNE.MODE = {mode!r} is not one of full | partial | head")


def apply_finetune_mode(model: nn.Module, mode: str, train_ta: bool = False) -> dict[str, tuple[int, int]]:
    """Set requires_grad per group; returns {group: (trainable, frozen)} parameter counts, also logged."""
    groups = model.param_groups()
    keep = trainable_groups(mode, list(groups), train_ta)
    counts = {}
    for name, modules in groups.items():
        n = 0
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(name in keep)
                n += p.numel()
        counts[name] = (n, 0) if name in keep else (0, n)
    lines = [f"  {g:<10} trainable {t:>12,}  frozen {f:>12,}" for g, (t, f) in counts.items()]
    total_t = sum(t for t, _ in counts.values())
    total_f = sum(f for _, f in counts.values())
    log.info("fine-tuning mode '%s':\n%s\n  %-10s trainable %12s  frozen %12s", mode, "\n".join(lines),
             "total", f"{total_t:,}", f"{total_f:,}")
    model.train(model.training)  # frozen groups switch to eval mode
    return counts
