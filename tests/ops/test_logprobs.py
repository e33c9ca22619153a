"""token_logps / sequence_logps / shift_for_causal_lm against naive loops and PyTorch's cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prefalign.ops import IGNORE_INDEX, sequence_logps, shift_for_causal_lm, token_logps


def _random(
    b: int = 3, t: int = 5, v: int = 11, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g) * 3
    labels = torch.randint(0, v, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) > 0.3
    return logits, labels, mask


def _naive_token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(labels.shape, dtype=torch.float64)
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            probs = torch.softmax(logits[b, t].double(), dim=-1)
            out[b, t] = torch.log(probs[labels[b, t]])
    return out


def test_token_logps_matches_naive_loop() -> None:
    logits, labels, _ = _random()
    got = token_logps(logits, labels)
    assert got.shape == labels.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _naive_token_logps(logits, labels))


def test_token_logps_matches_trl_selective_log_softmax() -> None:
    utils = pytest.importorskip("trl.trainer.utils")
    logits, labels, _ = _random(seed=1)
    torch.testing.assert_close(token_logps(logits, labels), utils.selective_log_softmax(logits, labels))


def test_token_logps_half_precision_is_upcast() -> None:
    logits, labels, _ = _random(seed=2)
    low = logits.bfloat16()
    got = token_logps(low, labels)
    assert got.dtype == torch.float32
    # Reference: exact log-softmax of the same bf16 values, computed in float64.
    torch.testing.assert_close(got.double(), _naive_token_logps(low.double(), labels), atol=1e-5, rtol=1e-5)


def test_token_logps_temperature() -> None:
    logits, labels, _ = _random(seed=3)
    torch.testing.assert_close(
        token_logps(logits, labels, temperature=0.7), token_logps(logits / 0.7, labels)
    )
    with pytest.raises(ValueError):
        token_logps(logits, labels, temperature=0.0)


def test_ignore_index_is_safe_and_zero() -> None:
    logits, labels, _ = _random(seed=4)
    labels[0, :2] = IGNORE_INDEX
    got = token_logps(logits, labels)
    assert torch.isfinite(got).all()
    assert (got[0, :2] == 0).all()
    torch.testing.assert_close(got[1:], token_logps(logits[1:], labels[1:]))


def test_sequence_logps_matches_loop_and_cross_entropy() -> None:
    logits, labels, mask = _random(b=4, t=6, seed=5)
    mask[2] = False  # a sequence with nothing to score sums to 0 with count 0
    logps, counts = sequence_logps(logits, labels, mask)
    assert logps.shape == counts.shape == (4,)

    naive = _naive_token_logps(logits, labels)
    expected = torch.tensor(
        [sum(naive[b, t] for t in range(6) if mask[b, t]) for b in range(4)], dtype=torch.float64
    )
    torch.testing.assert_close(logps.double(), expected)
    torch.testing.assert_close(counts, mask.sum(-1).float())
    assert logps[2] == 0 and counts[2] == 0

    # The total equals PyTorch's summed cross-entropy with masked labels set to ignore_index.
    ce = F.cross_entropy(
        logits.flatten(0, 1), labels.masked_fill(~mask, IGNORE_INDEX).flatten(), reduction="sum"
    )
    torch.testing.assert_close(-logps.sum(), ce)


def test_sequence_logps_ignores_garbage_at_masked_positions() -> None:
    logits, labels, mask = _random(seed=6)
    labels = labels.masked_fill(~mask, IGNORE_INDEX)
    logits = logits.masked_fill(~mask.unsqueeze(-1), float("nan"))  # must not leak through the mask
    logps, _ = sequence_logps(logits, labels, mask)
    assert torch.isfinite(logps).all()


def test_shift_for_causal_lm_aligns_prediction_with_next_token() -> None:
    b, t, v = 2, 5, 7
    input_ids = torch.randint(0, v, (b, t))
    loss_mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]])
    # Logits that put all mass on the *next* token: a perfect LM scores log-prob 0 after shifting.
    logits = torch.full((b, t, v), -1e4)
    logits[:, :-1].scatter_(-1, input_ids[:, 1:].unsqueeze(-1), 0.0)
    s_logits, s_labels, s_mask = shift_for_causal_lm(logits, input_ids, loss_mask)
    assert s_logits.shape == (b, t - 1, v) and s_labels.shape == s_mask.shape == (b, t - 1)
    torch.testing.assert_close(s_mask, loss_mask[:, 1:])
    logps, counts = sequence_logps(s_logits, s_labels, s_mask)
    torch.testing.assert_close(logps, torch.zeros(b))
    torch.testing.assert_close(counts, torch.tensor([3.0, 3.0]))


def test_gradient_flows_only_through_masked_tokens() -> None:
    logits, labels, mask = _random(seed=7)
    logits.requires_grad_(True)
    logps, _ = sequence_logps(logits, labels, mask)
    logps.sum().backward()
    assert logits.grad is not None
    assert (logits.grad[~mask] == 0).all()
    assert (logits.grad[mask].abs().sum(-1) > 0).all()
