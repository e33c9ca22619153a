"""THE prompt renderer: one rule for training, sampling and scoring."""

from __future__ import annotations

from prefalign.models.tiny import build_tiny_causal_lm
from prefalign.rollout import SamplingConfig, generate
from prefalign.tokens import (
    encode_document,
    encode_prompt,
    encode_prompt_completion,
    left_pad,
    render_completion,
    render_prompt,
    right_pad,
)


class PlainTokenizer:
    """A tokenizer without a chat template (a BERT or raw GPT-2 stand-in): one id per character."""

    chat_template = None
    eos_token = "$"

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": ([0] if add_special_tokens else []) + [ord(c) for c in text]}


def test_plain_string_prompt_is_one_user_message_with_a_chat_template() -> None:
    _, tokenizer = build_tiny_causal_lm()
    as_string = render_prompt(tokenizer, "Hi there")
    as_messages = render_prompt(tokenizer, [{"role": "user", "content": "Hi there"}])
    assert as_string == as_messages == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    assert render_completion(tokenizer, "Hi there", "Hello") == "Hello<|im_end|>\n"
    assert render_prompt(tokenizer, "Hi", system_prompt="Be kind.").startswith("<|im_start|>system\nBe kind.")


def test_training_and_sampling_see_the_same_prompt_ids() -> None:
    model, tokenizer = build_tiny_causal_lm()
    prompt_ids, completion_ids = encode_prompt_completion(tokenizer, "Tell me a joke", "No.", max_length=64)
    sample = generate(model, tokenizer, ["Tell me a joke"], SamplingConfig(max_new_tokens=3))[0]
    assert sample.prompt_ids == prompt_ids == encode_prompt(tokenizer, "Tell me a joke")
    assert tokenizer.decode(completion_ids) == "No.<|im_end|>\n"


def test_without_a_chat_template_strings_are_raw_and_messages_a_transcript() -> None:
    tokenizer = PlainTokenizer()
    assert render_prompt(tokenizer, "Q: 2+2?") == "Q: 2+2?"
    assert render_completion(tokenizer, "Q: 2+2?", " 4") == " 4$"
    messages = [{"role": "user", "content": "hi"}]
    assert render_prompt(tokenizer, messages) == "user: hi\nassistant: "
    assert encode_prompt(tokenizer, "ab") == [0, 97, 98]  # plain text gets the special tokens
    assert encode_prompt(tokenizer, "abcdef", max_tokens=2) == [101, 102]  # the end is kept
    assert encode_document(tokenizer, "ab") == [0, 97, 98, 36]


def test_truncation_keeps_a_completion_token_and_the_prompt_end() -> None:
    tokenizer = PlainTokenizer()
    prompt, completion = encode_prompt_completion(
        tokenizer, "abcdef", "xyz", max_length=4, max_prompt_length=3
    )
    assert prompt == [100, 101, 102] and completion == [120]


def test_right_pad_marks_completions_and_left_pad_ends_prompts_in_the_last_column() -> None:
    batch = right_pad([[1, 2], [3]], [[4], [5, 6]], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 4], [3, 5, 6]]
    assert batch["loss_mask"].tolist() == [[0, 0, 1], [0, 1, 1]]
    left = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert left["input_ids"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
