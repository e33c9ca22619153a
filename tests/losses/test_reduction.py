"""reduce_loss / reduce_token_loss: accumulated gradients do not depend on the micro-batch split."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from prefalign.losses import dpo_loss, reduce_loss, reduce_token_loss
from prefalign.losses.reduction import TokenReduction

SPLITS = [[8], [4, 4], [3, 1, 4], [1] * 8, [5, 3]]


def _model_and_data(seed: int = 0) -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)


def _pair_losses(model: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # Stand-in "log-probs" from a model, so the gradient reaches parameters through a real loss.
    out = model(x)
    return dpo_loss(out[:, 0], out[:, 1], out[:, 2].detach(), out[:, 3].detach(), beta=0.5)[0]


def _grad(model: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return torch.cat(grads)


def _accumulate(
    model: torch.nn.Module, split: list[int], step: Callable[[slice], torch.Tensor]
) -> torch.Tensor:
    model.zero_grad()
    start = 0
    for size in split:
        step(slice(start, start + size)).backward()
        start += size
    return _grad(model)


def test_reduce_loss_is_a_mean_by_default_and_divides_by_global_count() -> None:
    x = torch.tensor([1.0, 2.0, 6.0])
    assert reduce_loss(x) == 3.0
    assert reduce_loss(x, num_items_in_global_batch=6) == 1.5
    with pytest.raises(ValueError):
        reduce_loss(x.unsqueeze(0))


@pytest.mark.parametrize("split", SPLITS)
def test_reduce_loss_gradient_is_split_invariant(split: list[int]) -> None:
    model, x = _model_and_data()
    model.zero_grad()
    reduce_loss(_pair_losses(model, x)).backward()
    full = _grad(model)
    accumulated = _accumulate(
        model, split, lambda s: reduce_loss(_pair_losses(model, x[s]), num_items_in_global_batch=x.shape[0])
    )
    torch.testing.assert_close(accumulated, full)


def test_per_micro_batch_mean_would_not_be_invariant() -> None:
    # Guards the test above: without the global count an uneven split changes the gradient.
    model, x = _model_and_data()
    model.zero_grad()
    reduce_loss(_pair_losses(model, x)).backward()
    full = _grad(model)
    # The common "mean per micro-batch / number of accumulation steps" weights the 3-item
    # micro-batch's examples by 1/6 and the 5-item one's by 1/10 instead of all by 1/8.
    naive = _accumulate(model, [5, 3], lambda s: reduce_loss(_pair_losses(model, x[s])) / 2)
    assert not torch.allclose(naive, full)


def _token_setup(seed: int = 0) -> tuple[torch.nn.Embedding, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    emb = torch.nn.Embedding(10, 1, dtype=torch.float64)
    ids = torch.randint(0, 10, (8, 6))
    lengths = torch.tensor([1, 6, 3, 2, 5, 4, 6, 2])  # unequal, so token and sequence means differ
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    return emb, ids, mask


@pytest.mark.parametrize("mode", ["token_mean", "sequence_mean", "sum"])
@pytest.mark.parametrize("split", SPLITS)
def test_reduce_token_loss_gradient_is_split_invariant(mode: TokenReduction, split: list[int]) -> None:
    emb, ids, mask = _token_setup()

    def per_token(s: slice) -> torch.Tensor:
        return emb(ids[s]).squeeze(-1) ** 2

    emb.zero_grad()
    reduce_token_loss(per_token(slice(None)), mask, mode=mode).backward()
    full = _grad(emb)
    n_tokens, n_seqs = int(mask.sum()), ids.shape[0]
    accumulated = _accumulate(
        emb,
        split,
        lambda s: reduce_token_loss(
            per_token(s), mask[s], mode=mode, total_tokens=n_tokens, total_sequences=n_seqs
        ),
    )
    torch.testing.assert_close(accumulated, full)


def test_token_modes_hand_worked() -> None:
    per_token = torch.tensor([[1.0, 3.0, 100.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # token_mean: (1 + 3 + 2) / 3 = 2; sequence_mean: (mean(1, 3) + mean(2)) / 2 = (2 + 2) / 2 = 2
    assert reduce_token_loss(per_token, mask) == 2.0
    assert reduce_token_loss(per_token, mask, mode="sequence_mean") == 2.0
    assert reduce_token_loss(per_token, mask, mode="sum") == 6.0
    assert reduce_token_loss(per_token, mask, total_tokens=12) == 0.5
    assert reduce_token_loss(per_token, mask, mode="sequence_mean", total_sequences=4) == 1.0
    with pytest.raises(ValueError):
        reduce_token_loss(per_token, mask, mode="mean")  # type: ignore[arg-type]
