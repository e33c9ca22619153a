"""Tokens: THE prompt renderer (training = sampling = scoring), the encoder and the two collators.

Imports nothing of prefalign: every layer above may use it.
"""

from prefalign.tokens.collate import left_pad, right_pad
from prefalign.tokens.render import (
    Message,
    Text,
    encode,
    encode_completion,
    encode_document,
    encode_prompt,
    encode_prompt_completion,
    has_chat_template,
    render_completion,
    render_prompt,
)

__all__ = [
    "Message",
    "Text",
    "encode",
    "encode_completion",
    "encode_document",
    "encode_prompt",
    "encode_prompt_completion",
    "has_chat_template",
    "left_pad",
    "render_completion",
    "render_prompt",
    "right_pad",
]
