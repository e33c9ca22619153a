"""THE prompt renderer: one rule for how a prompt and its completion become text and token ids.

Training, sampling and scoring all go through these functions, so a model is trained on exactly
the text it later samples from and is scored on.

The rule:

* **Tokenizer with a chat template** (SmolLM2, the tiny test model): a list of messages is
  rendered by the template with a generation prompt; a **plain-string prompt is one user
  message** (after ``system_prompt`` when given). A completion is the assistant's reply: a string
  becomes one assistant message and the template's own end-of-turn token closes it, so the model
  learns to stop the way the template stops.
* **Tokenizer without a chat template** (a BERT reward encoder, a raw GPT-2): a string is used as
  it is and gets the tokenizer's special tokens (e.g. BOS); messages become ``role: content``
  lines followed by ``assistant: ``. A completion is its text followed by the EOS token.

A row without a prompt (an SFT or PHF document) is plain text in both cases: it is a document,
not a turn of a conversation (:func:`encode_document`).
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
Text = str | list[Message]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _as_messages(prompt: Text, system_prompt: str | None) -> list[Message]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _transcript(messages: list[Message]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def render_prompt(tokenizer: Any, prompt: Text, system_prompt: str | None = None) -> str:
    """The prompt as the model reads it, ending where the reply begins."""
    if has_chat_template(tokenizer):
        messages = _as_messages(prompt, system_prompt)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, str):
        return prompt
    return _transcript(prompt) + "assistant: "


def render_completion(
    tokenizer: Any, prompt: Text, completion: Text, system_prompt: str | None = None
) -> str:
    """The completion as it follows :func:`render_prompt`, including its end-of-turn marker."""
    eos = tokenizer.eos_token or ""
    if not has_chat_template(tokenizer):
        if isinstance(completion, list):
            return "\n".join(str(m["content"]) for m in completion) + eos
        return completion + eos
    reply = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
    messages = _as_messages(prompt, system_prompt)
    head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + list(reply), tokenize=False)
    if full.startswith(head):
        return full[len(head) :]
    # A template that renders the history differently once a reply follows: keep the reply text.
    return str(reply[-1]["content"]) + eos


def encode(tokenizer: Any, text: str, *, special_tokens: bool) -> list[int]:
    """Token ids of ``text`` (the one encoder call; no truncation, no padding)."""
    return list(tokenizer(text, add_special_tokens=special_tokens)["input_ids"])


def encode_prompt(
    tokenizer: Any,
    prompt: Text,
    *,
    system_prompt: str | None = None,
    suffix: str = "",
    max_tokens: int = 0,
) -> list[int]:
    """Ids of the rendered prompt plus ``suffix`` (e.g. a control token the reply continues).

    A chat template writes its own special tokens; plain text gets the tokenizer's. With
    ``max_tokens > 0`` only the last ``max_tokens`` ids are kept (the end of a prompt matters most).
    """
    text = render_prompt(tokenizer, prompt, system_prompt) + suffix
    ids = encode(tokenizer, text, special_tokens=not has_chat_template(tokenizer))
    return ids[-max_tokens:] if max_tokens > 0 else ids


def encode_completion(
    tokenizer: Any, prompt: Text, completion: Text, *, system_prompt: str | None = None
) -> list[int]:
    """Ids of the completion as it follows the prompt, end-of-turn included."""
    return encode(
        tokenizer, render_completion(tokenizer, prompt, completion, system_prompt), special_tokens=False
    )


def encode_prompt_completion(
    tokenizer: Any,
    prompt: Text,
    completion: Text,
    *,
    max_length: int,
    max_prompt_length: int = 0,
    system_prompt: str | None = None,
) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids): prompt left-truncated to ``max_prompt_length``, the completion
    right-truncated so both fit ``max_length`` (at least one completion token is kept)."""
    prompt_ids = encode_prompt(tokenizer, prompt, system_prompt=system_prompt, max_tokens=max_prompt_length)
    completion_ids = encode_completion(tokenizer, prompt, completion, system_prompt=system_prompt)
    room = max(1, max_length - len(prompt_ids))
    return prompt_ids, completion_ids[:room]


def encode_document(tokenizer: Any, text: str, *, max_length: int = 0) -> list[int]:
    """Ids of a document with no prompt: the tokenizer's special tokens, the text, EOS."""
    ids = encode(tokenizer, text + (tokenizer.eos_token or ""), special_tokens=True)
    return ids[:max_length] if max_length > 0 else ids
