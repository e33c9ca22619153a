"""Running reward normalisation: mean and variance over every reward seen so far.

Batches are merged with the parallel update of Chan, Golub & LeVeque 1979 ("Updating Formulae
and a Pairwise Algorithm for Computing Sample Variances"), the batch form of Welford's update:
for a running (n_a, mean_a, M2_a) and a batch (n_b, mean_b, M2_b), with delta = mean_b - mean_a,

    n = n_a + n_b,  mean = mean_a + delta * n_b / n,  M2 = M2_a + M2_b + delta^2 * n_a * n_b / n,

where M2 is the sum of squared deviations from the mean. The statistics equal those of all
values at once (up to float64 rounding), whatever the batch sizes. They are kept as Python floats
(float64) so :meth:`RunningNormalizer.state_dict` is JSON-able (``Run.save_checkpoint``'s
``state``) and a resumed run continues with bit-identical statistics.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class RunningNormalizer:
    """``normalize(x) = (x - mean) / std`` over every value given to :meth:`update` so far.

    Args:
        shift_mean: subtract the running mean; False only divides by the running std (the
            "rewards without mean shift" of Huang et al., "The N Implementation Details of RLHF
            with PPO", which keeps the sign of a reward meaningful).
        eps: the smallest std divided by, so constant rewards do not blow up.

    ``std`` is the unbiased (n - 1) standard deviation; before two values have been seen it is 1
    (no spread is known yet, so values pass unscaled).
    """

    def __init__(self, *, shift_mean: bool = True, eps: float = 1e-8) -> None:
        self.shift_mean = shift_mean
        self.eps = eps
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: torch.Tensor) -> None:
        """Merge a batch of values (any shape, all of them counted) into the statistics."""
        x = values.detach().to(device="cpu", dtype=torch.float64).flatten()
        n = x.numel()
        if n == 0:
            return
        if not bool(torch.isfinite(x).all()):
            # One NaN would poison the statistics for the rest of the run.
            raise ValueError("RunningNormalizer.update: rewards must be finite")
        batch_mean = float(x.mean())
        batch_m2 = float(((x - batch_mean) ** 2).sum())
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def var(self) -> float:
        """Unbiased variance of the values seen (1.0 before two values)."""
        return self.m2 / (self.count - 1) if self.count > 1 else 1.0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (any shape) normalised with the current statistics, in their own dtype."""
        x = values.to(torch.float64)
        if self.shift_mean:
            x = x - self.mean
        return (x / max(self.std, self.eps)).to(values.dtype)

    def state_dict(self) -> dict[str, Any]:
        """The statistics, as JSON-able numbers."""
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a ValueError names a missing or bad entry)."""
        missing = sorted({"count", "mean", "m2"} - set(state))
        if missing:
            raise ValueError(f"RunningNormalizer state: missing {missing}")
        count, mean, m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
        if count < 0 or m2 < 0 or not (math.isfinite(mean) and math.isfinite(m2)):
            raise ValueError(f"RunningNormalizer state: invalid {state}")
        self.count, self.mean, self.m2 = count, mean, m2
