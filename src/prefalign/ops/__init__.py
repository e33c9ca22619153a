"""Tensor operations shared by the losses and recipes: masked reductions and label log-probs.

Everything here is pure: tensors in, tensors out, no model calls and no reductions hidden
behind a flag.
"""

from prefalign.ops.logprobs import IGNORE_INDEX, sequence_logps, shift_for_causal_lm, token_logps
from prefalign.ops.masked import masked_count, masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [
    "IGNORE_INDEX",
    "masked_count",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "sequence_logps",
    "shift_for_causal_lm",
    "token_logps",
]
