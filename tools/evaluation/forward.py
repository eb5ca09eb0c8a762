"""One evaluation pass: a model's probabilities, labels and mean loss over a loader."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tools.device import autocast


@torch.inference_mode()
def validate(model: nn.Module, loader, criterion: nn.Module, *, to_probs: Callable[[torch.Tensor], torch.Tensor],
             device: torch.device, amp_dtype: torch.dtype | None = None, desc: str = "eval",
             progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Returns (probabilities, labels, row indices, mean loss) over the loader; ``to_probs`` maps
    logits to probabilities (an inference contract's ``ProbabilityHead``)."""
    model.eval()
    criterion.eval()
    probs, labels, rows = [], [], []
    loss_sum = torch.zeros((), device=device)
    n = 0
    for x, y, idx in tqdm(loader, desc=desc, leave=False, disable=None if progress else True, mininterval=1.0):
        with autocast(device, amp_dtype):
            logits = model(x).float()
        loss, _ = criterion(logits, y)
        loss_sum += loss * x.shape[0]
        n += x.shape[0]
        probs.append(to_probs(logits))  # kept on the device: no sync per batch
        labels.append(y)
        rows.append(idx)
    return (torch.cat(probs).cpu().numpy(), torch.cat(labels).cpu().numpy(), torch.cat(rows).numpy(),
            loss_sum.item() / max(n, 1))
