"""Rule and scorer rewards (prefalign.rewards.rules), against hand-worked numbers."""

from __future__ import annotations

import pytest

from prefalign.feedback.scorers import blocklist_scorer, vader_scorer
from prefalign.rewards import RuleReward, ScorerReward
from prefalign.rewards.base import RewardBreakdown

TEXTS = ["Thank you! The answer is 42.", "The answer is 42, thank you, thank you.", "I don't know."]


def test_rules_add_each_matching_rules_weight_once(make_sample) -> None:
    reward = RuleReward([(r"\b42\b", 2.0), (r"(?i)thank you", 0.5), (r"don't know", -1.0)])
    breakdown = reward.score([make_sample(t) for t in TEXTS])
    # text 0: 42 (+2) and "Thank" matches (?i) (+0.5); text 1: 42 and two thank-yous count once
    # (+2.5); text 2: only "don't know" (-1).
    assert breakdown.total.tolist() == [2.5, 2.5, -1.0]
    assert list(breakdown.parts) == ["rules"] and breakdown.parts["rules"] is breakdown.total


def test_rules_are_case_sensitive_unless_the_pattern_says_otherwise(make_sample) -> None:
    samples = [make_sample(t) for t in TEXTS]
    assert RuleReward([("thank you", 1.0)])(samples).tolist() == [0.0, 1.0, 0.0]


def test_no_rules_and_no_samples() -> None:
    assert RuleReward([])([]).tolist() == []


def test_a_bad_pattern_names_the_rule() -> None:
    with pytest.raises(ValueError, match=r"^rules\[1\]\.pattern: not a valid regular expression '\(a'"):
        RuleReward([("ok", 1.0), ("(a", 1.0)])


def test_blocklist_scorer_reads_the_completion_only(make_sample) -> None:
    reward = ScorerReward(blocklist_scorer([r"\bstupid\b"]))
    samples = [make_sample("What a STUPID idea", prompt="fine"), make_sample("fine", prompt="stupid prompt")]
    breakdown = reward.score(samples)
    assert isinstance(breakdown, RewardBreakdown)
    assert breakdown.total.tolist() == [-1.0, 0.0]
    assert breakdown.parts == {"scorer": breakdown.total}


def test_vader_scorer_matches_the_feedback_scorer(make_sample) -> None:
    texts = ["I love this, it is wonderful!", "This is awful and I hate it.", "The sky is blue."]
    values = ScorerReward(vader_scorer())([make_sample(t) for t in texts])
    expected = vader_scorer()(texts)
    assert values.tolist() == pytest.approx(expected)
    assert values[0] > 0.5 and values[1] < -0.5 and values[2] == 0.0
