"""Contrastive alignment: InfoNCE over one preferred text and a set of worse ones.

For each prompt ``x_i`` there is one *positive* (the preferred answer) with score ``s+_i`` and
``N`` *negatives* (its rejected answer, and in the recipe also the answers of the other rows of
its optimizer step) with scores
``s-_ij``. InfoNCE (van den Oord et al. 2018, "Representation Learning with Contrastive
Predictive Coding", arXiv 1807.03748, eq. 4) is the cross-entropy of picking the positive out of
the ``1 + N`` candidates with a softmax over ``score / tau``::

    loss_i = -log  exp(s+_i / tau) / ( exp(s+_i / tau) + sum_j exp(s-_ij / tau) )

The temperature ``tau`` sets how sharp the softmax is: small ``tau`` concentrates the gradient on
the hardest negatives, large ``tau`` spreads it evenly. This is the normalised-temperature
cross-entropy of SimCLR (Chen et al. 2020, arXiv 2002.05709, eq. 1) and one direction of CLIP's
symmetric loss over in-batch pairs (Radford et al. 2021, arXiv 2103.00020, fig. 3), both on
cosine similarities.

What it optimises, and how it differs from DPO
----------------------------------------------
* DPO (Rafailov et al. 2023) is *pairwise*: ``-log sigmoid(beta h)`` with ``h`` the difference of
  the two answers' log-ratios to a frozen reference. It is derived from the KL-regularised RL
  objective, and ``beta`` is the strength of that KL penalty.
* InfoNCE is a ``(1 + N)``-way classification. It asks only that the positive outscore every
  negative, by a margin measured in units of ``tau``. There is no KL term: nothing ties the
  policy to a reference unless the scores themselves are log-ratios to one.
* With one negative the two coincide:
  ``-log [e^{a/tau} / (e^{a/tau} + e^{b/tau})] = -log sigmoid((a - b) / tau)``. So with scores
  ``s = log pi(y|x) - log ref(y|x)`` (summed over tokens) and ``tau = 1 / beta``, or with scores
  ``beta * (log pi - log ref)`` and ``tau = 1``, InfoNCE with the rejected answer as the only
  negative *is* DPO's sigmoid loss. InfoNCA (Chen et al. 2024, "Noise Contrastive Alignment of
  Language Models with Explicit Rewards", arXiv 2402.05369) makes the same observation and
  generalises it to K scored responses.
* Contrastive Preference Learning (Hejna et al. 2023, arXiv 2310.13639, sec. 3.2) is this pairwise
  contrastive loss on the policy's own discounted log-likelihoods scaled by ``alpha``, with no
  reference model. That is the ``reference=False`` likelihood form here with one negative,
  ``tau = 1 / alpha`` and summed log-probs (``gamma = 1``).
* SLiC-HF (Zhao et al. 2023, arXiv 2305.10425) also contrasts sequence likelihoods, but with a
  hinge ``max(0, delta - log P(y+|x) + log P(y-|x))`` instead of a softmax
  (``prefalign.losses.preference.hinge_loss`` is its reference-based form).

The scores can be anything comparable across candidates: log-likelihoods, log-ratios, or cosine
similarities of embeddings. The loss never calls a model; ``prefalign.recipes.contrastive``
computes the scores.
"""

from __future__ import annotations

import torch


def info_nce_loss(
    positive_scores: torch.Tensor,
    negative_scores: torch.Tensor,
    *,
    temperature: float,
    negative_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InfoNCE (van den Oord et al. 2018, eq. 4) with a temperature, per example.

    ``loss_i = logsumexp([s+_i, s-_i1, ..., s-_iN] / tau) - s+_i / tau``, the cross-entropy of
    classifying the positive among the ``1 + N`` candidates. When every score is equal the loss
    is ``log(1 + N)``; with ``N = 1`` it is ``-log sigmoid((s+ - s-) / tau)`` (DPO's sigmoid loss
    when the scores are ``beta``-scaled log-ratios and ``tau = 1``).

    Args:
        positive_scores: (B,) score of each row's preferred candidate.
        negative_scores: (B, N) scores of each row's negatives.
        temperature: ``tau > 0``; the scores are divided by it before the softmax.
        negative_mask: optional (B, N) bool (or 0/1), True where the negative counts. Masked
            entries are left out of the sum (any value there, even ``nan``, is ignored), so rows
            may have different numbers of negatives; a row with none has loss 0.

    Returns:
        ``(losses, metrics)``: losses (B,), unreduced. Metrics are detached () tensors:
        ``accuracy`` (fraction of rows whose positive strictly outscores every counted negative),
        ``scores/positive`` (mean positive score), ``scores/negative`` (mean over the rows with a
        counted negative of each row's mean negative score), ``negatives`` (mean number of counted
        negatives per row). Each is a mean over rows of a per-row value, so example-weighted means
        of these over a split of the rows give the metric of all rows (when every row has a
        negative).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if positive_scores.dim() != 1 or negative_scores.dim() != 2:
        raise ValueError(
            "expected positive_scores (B,) and negative_scores (B, N), got "
            f"{tuple(positive_scores.shape)} and {tuple(negative_scores.shape)}"
        )
    if negative_scores.shape[0] != positive_scores.shape[0]:
        raise ValueError(
            f"batch sizes differ: positive {positive_scores.shape[0]}, negative {negative_scores.shape[0]}"
        )
    if negative_mask is None:
        valid = torch.ones_like(negative_scores, dtype=torch.bool)
    else:
        if negative_mask.shape != negative_scores.shape:
            raise ValueError(
                f"negative_mask {tuple(negative_mask.shape)} must match negative_scores "
                f"{tuple(negative_scores.shape)}"
            )
        valid = negative_mask.to(dtype=torch.bool, device=negative_scores.device)

    # Masked negatives become -inf logits: exp(-inf) = 0 adds nothing to the denominator, and
    # torch.where (not multiplication) keeps a nan at a masked position from leaking through.
    minus_inf = torch.tensor(float("-inf"), dtype=negative_scores.dtype, device=negative_scores.device)
    negative_logits = torch.where(valid, negative_scores / temperature, minus_inf)
    logits = torch.cat([positive_scores.unsqueeze(1) / temperature, negative_logits], dim=1)
    losses = torch.logsumexp(logits, dim=1) - logits[:, 0]

    with torch.no_grad():
        pos = positive_scores.detach()
        neg = negative_scores.detach()
        best_negative = torch.where(valid, neg, minus_inf).amax(dim=1) if neg.shape[1] else pos - 1
        counts = valid.sum(dim=1)
        row_negative = torch.where(valid, neg, torch.zeros_like(neg)).sum(dim=1) / counts.clamp(min=1)
        has_negative = counts > 0
        metrics = {
            "accuracy": (pos > best_negative).float().mean(),
            "scores/positive": pos.mean(),
            "scores/negative": row_negative[has_negative].sum() / has_negative.sum().clamp(min=1),
            "negatives": counts.float().mean(),
        }
    return losses, metrics
