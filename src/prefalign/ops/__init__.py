"""Tensor operations shared by the losses and recipes: masked reductions, label log-probs and
KL estimators.

Everything here is pure: tensors in, tensors out, no model calls and no reductions hidden
behind a flag.
"""

from prefalign.ops.kl import KL_ESTIMATORS, kl_k1, kl_k2, kl_k3, sequence_kl, token_kl
from prefalign.ops.logprobs import IGNORE_INDEX, sequence_logps, shift_for_causal_lm, token_logps
from prefalign.ops.masked import masked_count, masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [
    "IGNORE_INDEX",
    "KL_ESTIMATORS",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "masked_count",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "sequence_kl",
    "sequence_logps",
    "shift_for_causal_lm",
    "token_kl",
    "token_logps",
]
