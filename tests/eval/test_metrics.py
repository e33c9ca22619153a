"""prefalign.eval: judges, distinct-n, KL estimate, reward scores, the HTML report and its layer."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from prefalign.eval import (
    distinct_n,
    kl_to_reference,
    mean,
    strong_rate,
    text_metrics,
    textblob_polarity,
    vader_compound,
    words,
)
from prefalign.eval.report import bars_png, histogram_png, render_report
from prefalign.models import LoraSettings, load_causal_lm
from prefalign.models.scoring import score_completions


@dataclass
class _Sample:
    prompt_ids: list[int]
    completion_ids: list[int]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFALIGN_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def test_judges_agree_on_clear_sentiment() -> None:
    texts = ["A wonderful, brilliant and moving film. I loved it!", "A dull, terrible and boring mess."]
    gold, judge2 = vader_compound(texts), textblob_polarity(texts)
    assert gold[0] > 0.8 and gold[1] < -0.5
    assert judge2[0] > 0 > judge2[1]
    assert all(-1 <= v <= 1 for v in gold + judge2)


def test_strong_rate_and_mean() -> None:
    assert strong_rate([0.9, 0.8, 0.1, -1.0]) == 0.5
    assert strong_rate([0.5], threshold=0.4) == 1.0
    assert math.isnan(strong_rate([])) and math.isnan(mean([]))
    assert mean([1.0, 2.0]) == 1.5


def test_distinct_n_pools_over_samples() -> None:
    # bigrams: (a b) (b c) (c a) (a b) | (a b) -> 3 unique of 5
    assert distinct_n(["a b c a b", "a b"], 2) == pytest.approx(3 / 5)
    assert distinct_n([[1, 2, 3], [1, 2]], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a a a a"], 1) == pytest.approx(1 / 4)
    assert distinct_n(["single"], 2) == 0.0
    assert words("It's GREAT, really.") == ["it's", "great", ",", "really", "."]


def test_text_metrics_keys() -> None:
    m = text_metrics(["Great movie!", "Bad movie."], lengths=[4, 6])
    assert set(m) == {"gold_mean", "gold_strong_rate", "judge2_mean", "distinct2", "mean_length"}
    assert m["mean_length"] == 5.0


def test_kl_is_zero_against_itself_and_positive_after_change(cache) -> None:
    model, _ = load_causal_lm("tiny-causal-lm")
    samples = [_Sample([2, 10, 11], [12, 13, 3]), _Sample([2, 10], [14, 15])]
    same = kl_to_reference(model, samples, reference=model)
    assert same["kl"] == pytest.approx(0.0, abs=1e-6) and same["kl_k3"] == pytest.approx(0.0, abs=1e-6)
    lora, _ = load_causal_lm("tiny-causal-lm", lora=LoraSettings(r=4))
    assert kl_to_reference(lora, samples)["kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at 0
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    # Samples drawn from the changed policy: the k1 estimate should be clearly positive on average.
    from prefalign.rollout import generate

    _, tokenizer = load_causal_lm("tiny-causal-lm")
    drawn = generate(lora, tokenizer, ["Hello", "Tell me a joke"], n=8, max_new_tokens=8, seed=0)
    result = kl_to_reference(lora, drawn)
    assert result["kl"] > 0 and result["kl_stderr"] > 0 and math.isfinite(result["kl_per_token"])
    assert result["kl_k3"] > 0 and result["kl_k3_stderr"] > 0


def test_kl_reference_may_read_other_prompts(cache) -> None:
    """With ``reference_prompt_ids`` the reference scores each completion after its own prompt:
    KL = mean_i [log pi(c_i | p_i) - log ref(c_i | q_i)], checked against the completion scorer."""
    policy, _ = load_causal_lm("tiny-causal-lm")
    reference, _ = load_causal_lm("tiny-causal-lm")
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(1.5)
    samples = [_Sample([2, 10, 11, 40], [12, 13, 3]), _Sample([2, 10, 41], [14, 15])]
    bare = [[2, 10, 11], [2, 10]]  # the prompts without their last ("control") token
    got = kl_to_reference(policy, samples, reference=reference, reference_prompt_ids=bare)
    pi, _ = score_completions(policy, [(s.prompt_ids, s.completion_ids) for s in samples], 0, batch_size=2)
    ref_rows = [(q, s.completion_ids) for q, s in zip(bare, samples, strict=True)]
    ref, _ = score_completions(reference, ref_rows, 0, batch_size=2)
    assert got["kl"] == pytest.approx(float((pi - ref).mean()), abs=1e-5)
    same_prompts = kl_to_reference(policy, samples, reference=reference)["kl"]
    assert got["kl"] != pytest.approx(same_prompts, abs=1e-4)
    with pytest.raises(ValueError, match="reference_prompt_ids"):
        kl_to_reference(policy, samples, reference=reference, reference_prompt_ids=bare[:1])


def test_report_escapes_text_and_embeds_png() -> None:
    before = {"gold_mean": 0.3, "gold_strong_rate": 0.2, "judge2_mean": 0.1, "distinct2": 0.5}
    after = {"gold_mean": 0.6, "gold_strong_rate": 0.5, "judge2_mean": 0.3, "distinct2": 0.45}
    page = render_report(
        title="t <demo>",
        summary={"before": before, "after": after, "kl": 1.0, "raters": [{"id": "<x>"}]},
        plots=[
            ("hist", histogram_png([0.1, 0.9], [0.8, 0.95], title="h", xlabel="x")),
            ("bars", bars_png(before, after, list(before), title="b")),
        ],
        examples=[
            {
                "prompt": "Review <b>X</b>",
                "before": "<script>alert(1)</script>",
                "after": "Great & fun",
                "before_score": 0.1,
                "after_score": 0.9,
            }
        ],
    )
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Great &amp; fun" in page and "t &lt;demo&gt;" in page
    assert page.count("data:image/png;base64,") == 2
    assert "+0.300" in page


def test_kl_of_a_batch_equals_the_kl_of_its_rows(cache) -> None:
    # Rows of different prompt and completion lengths share one padded batch: each row's estimate
    # must not depend on its neighbours.
    policy, _ = load_causal_lm("tiny-causal-lm")
    reference, _ = load_causal_lm("tiny-causal-lm")
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(1.3)
    samples = [_Sample([2, 10, 11, 12], [13, 3]), _Sample([2], [14, 15, 16, 17]), _Sample([2, 10], [18])]
    batched = kl_to_reference(policy, samples, reference=reference, batch_size=3)
    single = [kl_to_reference(policy, [s], reference=reference, batch_size=1) for s in samples]
    for key in ("kl", "kl_k3"):
        assert batched[key] == pytest.approx(sum(r[key] for r in single) / 3, abs=1e-5)
    tokens = sum(len(s.completion_ids) for s in samples)
    assert batched["kl_per_token"] == pytest.approx(batched["kl"] * 3 / tokens, abs=1e-6)


def test_eval_imports_no_recipe() -> None:
    code = (
        "import sys, prefalign.eval, prefalign.eval.metrics, prefalign.eval.reward\n"
        "bad = sorted(m for m in sys.modules if m.startswith('prefalign.recipes'))\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
