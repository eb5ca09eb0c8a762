"""Logit adjustment (Menon et al., ICLR 2021), multi-label form with per-attribute priors pi_j.

* train form: the loss sees z_j + tau * log(pi_j / (1 - pi_j)); prediction uses the raw z_j.
* post-hoc form: training is untouched; prediction uses z_j - tau * log(pi_j / (1 - pi_j)).
Both push rare attributes (pi_j < 0.5) towards more positive predictions.
"""
from __future__ import annotations

import torch

from losses.common import log_odds


def train_adjusted(z: torch.Tensor, priors: torch.Tensor, tau: float) -> torch.Tensor:
    return z + tau * log_odds(priors).to(z)


def posthoc_adjusted(z: torch.Tensor, priors: torch.Tensor, tau: float) -> torch.Tensor:
    return z - tau * log_odds(priors).to(device=z.device, dtype=z.dtype)
