"""Fixtures for prefalign.rewards tests: rollout samples made by hand, a private model cache."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from prefalign.rollout import Sample

MakeSample = Callable[..., Sample]


@pytest.fixture
def make_sample() -> MakeSample:
    """``make_sample(completion, tokens=3, finished=True, prompt="Say hi.")``: a real rollout Sample
    (the rewards read it through their own protocol) with ``tokens`` dummy completion ids."""

    def make(completion: str, tokens: int = 3, finished: bool = True, prompt: object = "Say hi.") -> Sample:
        return Sample(
            prompt=prompt,  # type: ignore[arg-type]
            prompt_index=0,
            sample_index=0,
            completion=completion,
            completion_ids=list(range(5, 5 + tokens)),
            prompt_ids=[1, 2],
            finished=finished,
            stop_reason="stop_token" if finished else "length",
        )

    return make
