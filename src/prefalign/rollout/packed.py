"""Linear layers of the CPU decoding copy with their bf16 weights pre-packed for oneDNN.

A plain bf16 ``F.linear`` on the CPU hands oneDNN a row-major weight, which it reorders into its
blocked (VNNI) layout on every call: at decoding shapes (a few dozen rows) that reorder costs as
much as the product itself. Packing each weight once, and again only when :meth:`set_weight`
brings new weights after a policy update, halves the time of the decoding matmuls here (see
docs/BENCHMARKS.md). These are the ops ``torch.compile`` emits for frozen CPU linears.
"""

from __future__ import annotations

import torch

PACK_ROWS_HINT = 64
"""Typical rows per call (the decoding batch), oneDNN's hint for choosing the blocked layout."""


def packing_available(model: torch.nn.Module) -> bool:
    """True when ``model`` is a bf16 model on the CPU and this torch build has the oneDNN ops."""
    param = next(model.parameters(), None)
    return (
        param is not None
        and param.device.type == "cpu"
        and param.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class PackedLinear(torch.nn.Module):
    """``y = x W^T + b`` for inference with ``W`` held in oneDNN's packed bf16 layout."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = linear.bias
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16).clone()
        self.set_weight(linear.weight)

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        """Pack ``weight`` (out, in), any float dtype, replacing the current one."""
        dense = weight.detach().to(torch.bfloat16).contiguous()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(dense, PACK_ROWS_HINT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out), bf16."""
        return torch.ops.mkldnn._linear_pointwise(
            x.to(torch.bfloat16), self.packed, self.bias, "none", [], ""
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed bf16"


def pack_linears(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`PackedLinear`, except one sharing its
    weight with the input embeddings (a tied LM head: the lookup needs the dense weight).
    Returns how many were packed."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = id(embeddings.weight) if embeddings is not None else None
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and id(module.weight) != tied
    ]
    for name in names:
        model.set_submodule(name, PackedLinear(model.get_submodule(name)))
    return len(names)
