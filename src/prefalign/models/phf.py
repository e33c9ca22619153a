"""Model pieces of pretraining with human feedback (``prefalign phf``, Korbak et al. 2023).

* :func:`add_control_tokens`: the ``<|good|>`` / ``<|bad|>`` special tokens of conditional
  training, added to the tokenizer with new embedding rows (random, or started from the
  embeddings of the words in their names).
* :class:`PHFPolicy`: the causal LM, plus AWR's value head (a linear layer on the last hidden
  state) when asked; one forward gives the logits and the values.
* :func:`load_phf_policy`: both together, with LoRA when asked. Under LoRA the control tokens'
  embedding rows are trained in full beside the adapters (peft's ``trainable_token_indices``),
  so they are trainable parameters: checkpoints hold them and a resumed run restores them.
* The token layout of a scored document, ``head, [c^1] x^1, [c^2] x^2, ..., EOS``
  (:func:`encode_scored_document`, :func:`document_batch`). The head is the prompt, never a
  target: a corpus row's prompt as :func:`prefalign.tokens.encode_prompt` renders it, or for a
  plain document the tokenizer's own document start (its special tokens, or its BOS token when it
  adds none, e.g. a ChatML tokenizer), encoded as plain text since a document is not a chat turn
  (:func:`document_prompt`). Segments are encoded one by one (after the first
  with a leading space) because every token carries its segment's score.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from prefalign.models.loading import LoraSettings, apply_lora, disable_dropout, load_causal_lm
from prefalign.tokens import Text, encode, encode_prompt, right_pad

CONTROL_TOKEN_INITS = ("random", "words")
"""How new control-token embedding rows start (see :func:`add_control_tokens`)."""


def control_token_words(token: str) -> str:
    """The words in a control token's name: ``<|very_bad|>`` -> ``"very bad"`` ('' if none)."""
    return " ".join(re.findall(r"[A-Za-z0-9]+", token))


def add_control_tokens(
    model: Any, tokenizer: Any, good: str, bad: str, init: str = "random"
) -> tuple[int, int]:
    """Add ``good``/``bad`` as special tokens (kept if present) and grow the embeddings; returns their ids.

    ``init``: ``random`` leaves new rows at the model's random initialisation (as when pretraining
    from scratch; drawn from the global RNG, so a seeded run gets the same rows); ``words`` sets
    each new token's input (and output) row to the mean of the rows of the words in its name
    (``<|good|>`` -> " good"), so a pretrained model reads the control token at the scale and with
    the meaning of a word it knows instead of as a small random vector.
    """
    if init not in CONTROL_TOKEN_INITS:
        raise ValueError(f"init must be one of {CONTROL_TOKEN_INITS}, got {init!r}")
    known = set(tokenizer.get_vocab())
    tokenizer.add_tokens([good, bad], special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    ids = int(tokenizer.convert_tokens_to_ids(good)), int(tokenizer.convert_tokens_to_ids(bad))
    if init == "words":
        tables = [model.get_input_embeddings().weight]
        output = model.get_output_embeddings()
        if output is not None and output.weight is not tables[0]:
            tables.append(output.weight)
        for token, token_id in zip((good, bad), ids, strict=True):
            if token in known:
                continue  # the model already has a row for it
            word = control_token_words(token)
            pieces = list(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) if word else []
            if not pieces:
                raise ValueError(f"control_token_init=words: {token!r} has no word in its name to start from")
            with torch.no_grad():
                for table in tables:
                    table[token_id] = table[pieces].mean(dim=0)
    return ids


class PHFPolicy(torch.nn.Module):
    """The LM, plus AWR's value head (a linear layer on the last hidden state) when asked.

    ``forward`` takes the LM's keyword arguments and returns the LM's output, so the one
    completion scorer (:func:`prefalign.models.scoring.completion_logps`) scores it like any
    causal LM. With a value head the forward also sets :attr:`values` (B, T): ``values[:, t]`` is
    the value of the prefix ``input_ids[:, :t+1]``, the state in which token ``t + 1`` is
    predicted; read it right after the forward (its gradient reaches the LM body, as in Korbak's
    configs). The value head starts at zero, so AWR starts as RWR.
    """

    def __init__(self, lm: torch.nn.Module, value_head: bool) -> None:
        super().__init__()
        self.lm = lm
        self.value_head: torch.nn.Linear | None = None
        self.values: torch.Tensor | None = None
        if value_head:
            self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)

    @property
    def config(self) -> Any:
        return self.lm.config

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.lm.get_input_embeddings()

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm.get_output_embeddings()

    def forward(self, **kwargs: Any) -> Any:
        if self.value_head is None:
            return self.lm(**kwargs)
        out = self.lm(**{**kwargs, "output_hidden_states": True})
        self.values = self.value_head(out.hidden_states[-1].float()).squeeze(-1)
        return out


def load_phf_policy(
    name: str,
    *,
    lora: LoraSettings | None = None,
    control_tokens: tuple[str, str] | None = None,
    control_token_init: str = "random",
    value_head: bool = False,
) -> tuple[PHFPolicy, Any, tuple[int, int] | None]:
    """(policy, tokenizer, (good id, bad id) or None): the LM of ``name`` ready for a PHF objective.

    ``control_tokens`` = (good, bad) adds them (:func:`add_control_tokens`) and bans ``bad`` in the
    LM's generation config, so ``final/`` samples from a ``good``-prefixed prompt stay
    conditioned. ``lora`` wraps the LM in adapters after that, training the control tokens' rows
    in full. Dropout is off.
    """
    lm, tokenizer = load_causal_lm(name)
    ids = None
    if control_tokens is not None:
        ids = add_control_tokens(lm, tokenizer, *control_tokens, init=control_token_init)
        lm.generation_config.bad_words_ids = [[ids[1]]]
    if lora is not None:
        lm = apply_lora(lm, lora, "CAUSAL_LM", trainable_token_ids=ids or ())
    disable_dropout(lm)
    return PHFPolicy(lm, value_head=value_head), tokenizer, ids


# ---- documents ---------------------------------------------------------------------------------
@dataclasses.dataclass
class EncodedDocument:
    """A document's head (prompt ids: read, never targets) and body, with per body token whether it
    is a target, its segment's score and whether that segment is good."""

    head: list[int]
    body: list[int]
    targets: list[int]
    scores: list[float]
    good: list[bool]


def document_prompt(tokenizer: Any) -> tuple[Any, str]:
    """(reader, text): what a plain document (one without a prompt) starts from.

    ``reader`` is ``tokenizer`` without its chat template (a document is plain text, not a chat
    turn); ``text`` is '' when the tokenizer adds special tokens itself, else its BOS (or EOS)
    token, so the first token is predicted and sampling has a prompt.
    ``prefalign.rollout.generate(model, reader, [text], ...)`` reads exactly the head
    :func:`encode_scored_document` gives such a document.
    """
    reader = copy.copy(tokenizer)
    reader.chat_template = None
    if encode(tokenizer, "", special_tokens=True):
        return reader, ""
    start = tokenizer.bos_token or tokenizer.eos_token
    if start is None:
        raise ValueError(
            "the tokenizer has neither special tokens, a BOS nor an EOS token to start documents"
        )
    return reader, start


def encode_scored_document(
    tokenizer: Any,
    prompt: Text | None,
    segments: Sequence[str],
    scores: Sequence[float],
    *,
    threshold: float,
    control_ids: tuple[int, int] | None = None,
    keep_control: list[bool] | None = None,
    control_token_loss: bool = True,
    max_length: int = 0,
    system_prompt: str | None = None,
) -> EncodedDocument:
    """``head [c^1] x^1 [c^2] x^2 ... EOS``; the body is cut so that all fits ``max_length`` (0: no limit).

    The head is ``prompt`` as :func:`prefalign.tokens.encode_prompt` renders it (with
    ``system_prompt``), or the document start of :func:`document_prompt` when ``prompt`` is None.
    ``control_ids`` = (good id, bad id) puts a control token before each segment whose
    ``keep_control`` entry is true (a target only with ``control_token_loss``); each token carries
    its segment's score (EOS: the last segment's).
    """
    if prompt is None:
        head = encode_prompt(*document_prompt(tokenizer))
    else:
        head = encode_prompt(tokenizer, prompt, system_prompt=system_prompt)
    out = EncodedDocument(head, [], [], [], [])

    def put(ids: list[int], target: int, score: float) -> None:
        out.body.extend(ids)
        out.targets.extend([target] * len(ids))
        out.scores.extend([score] * len(ids))
        out.good.extend([score >= threshold] * len(ids))

    for i, (text, score) in enumerate(zip(segments, scores, strict=True)):
        if control_ids is not None and (keep_control is None or keep_control[i]):
            put([control_ids[0] if score >= threshold else control_ids[1]], int(control_token_loss), score)
        put(encode(tokenizer, (" " if i else "") + text, special_tokens=False), 1, score)
    put([tokenizer.eos_token_id], 1, scores[-1])
    room = max(0, max_length - len(head)) if max_length > 0 else len(out.body)
    for key in ("body", "targets", "scores", "good"):
        setattr(out, key, getattr(out, key)[:room])
    return out


def document_batch(docs: list[EncodedDocument], pad_id: int) -> dict[str, torch.Tensor]:
    """The right-padded batch, with ``loss_mask`` on the targets and (B, T) ``scores`` and ``good``."""
    batch = right_pad([d.head for d in docs], [d.body for d in docs], pad_id)
    for key, field, dtype in (
        ("loss_mask", "targets", torch.long),
        ("scores", "scores", torch.float32),
        ("good", "good", torch.bool),
    ):
        rows = [torch.tensor([0] * len(d.head) + getattr(d, field), dtype=dtype) for d in docs]
        batch[key] = pad_sequence(rows, batch_first=True)  # the same right padding as right_pad's
    return batch
