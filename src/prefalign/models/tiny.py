"""Tiny random models and a tiny tokenizer, built in-process for tests and smoke runs.

Everything here is deterministic: the byte-level BPE tokenizer is trained on the fixed text
below, and weights are drawn from a private torch generator state seeded with ``seed`` (the
global RNG is left untouched). Building both folders takes well under a second after imports.

Special tokens (ChatML-like, mirroring SmolLM2 so recipes behave the same on both):

=========  ==================  ==
role       token               id
=========  ==================  ==
pad        ``<|pad|>``         0
unk        ``<|endoftext|>``   1
bos        ``<|im_start|>``    2
eos        ``<|im_end|>``      3
=========  ==================  ==

The tokenizer adds no special tokens on plain ``tokenizer(text)`` calls (like SmolLM2); the chat
template writes ``<|im_start|>role\\n...<|im_end|>\\n`` turns.
"""

from __future__ import annotations

from pathlib import Path

import torch

PAD, UNK, BOS, EOS = "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TINY_SEED = 1234
TINY_VOCAB_SIZE = 512
TINY_MAX_LENGTH = 2048

# Training text for the tiny BPE: a few hundred words of plain English in the style of the
# chat and preference data the toolkit handles. Written for this project; changing it changes
# the tokenizer (bump TINY_VERSION in the registry when you do).
_CORPUS = """
The user asks a question and the assistant gives a helpful, honest and harmless answer.
A good answer is clear, short and kind. A bad answer is rude, wrong or far too long.
People compare two answers to the same prompt and say which one they prefer. The preferred
answer is called chosen and the other one is called rejected. A reward model learns to give the
chosen answer a higher score than the rejected answer. Direct preference optimisation trains the
policy to raise the probability of the chosen answer relative to a frozen reference model.
Hello! How are you today? I am fine, thank you. What can I help you with?
Please explain how plants make food from sunlight. Plants use light, water and air to make sugar
in their leaves. This process is called photosynthesis and it releases oxygen.
Can you write a short poem about the sea? The sea is wide and blue, the waves come back to you.
What is the capital of France? The capital of France is Paris. What is two plus two? It is four.
Tell me a joke. Why did the robot go to school? Because it wanted to improve its learning rate.
How do I bake bread? Mix flour, water, salt and yeast, let the dough rise, then bake it hot.
I do not know the answer to that, but I can try to help you find it. Let me think step by step.
First, read the question carefully. Second, check the facts. Third, write a short reply.
Thank you for your patience. Is there anything else you would like to know? Have a nice day.
The model was trained on many examples of good and bad replies, and it learned to prefer the
good ones. Training uses a learning rate, a batch size, a number of steps and a random seed.
The loss goes down when the model gets better. Accuracy goes up when the reward of the chosen
answer is above the reward of the rejected answer. We evaluate on held out pairs to be sure.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Symbols: , . ! ? : ; ' " ( ) [ ] { } - + = * / % # @ &.
The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore.
Never share private information. Be polite, be safe, and be useful. Say sorry when you are wrong.
Summarise this text in one sentence. Translate this sentence into simple words. List three ideas.
Yes. No. Maybe. Sure, here is an example. Of course! Great question. That sounds good to me.
"""


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE):
    """A deterministic byte-level BPE tokenizer (``PreTrainedTokenizerFast``) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [line for line in _CORPUS.strip().splitlines() if line.strip()]
    core.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=TINY_MAX_LENGTH,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _llama_config(tokenizer, **overrides):
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=TINY_MAX_LENGTH,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def _seeded_build(cls, config, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    return model.to(torch.float32)


def build_tiny_causal_lm(seed: int = TINY_SEED):
    """(model, tokenizer): a 2-layer, 64-wide random ``LlamaForCausalLM`` and the tiny tokenizer."""
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    model = _seeded_build(LlamaForCausalLM, _llama_config(tokenizer), seed)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model, tokenizer


def build_tiny_reward(seed: int = TINY_SEED + 1):
    """(model, tokenizer): the tiny Llama body with a 1-output score head (``LlamaForSequenceClassification``)."""
    from transformers import LlamaForSequenceClassification

    tokenizer = build_tiny_tokenizer()
    config = _llama_config(tokenizer, num_labels=1)
    model = _seeded_build(LlamaForSequenceClassification, config, seed)
    return model, tokenizer


def _save(model, tokenizer, out_dir: Path) -> None:
    from prefalign.models._atomic import quiet_transformers

    with quiet_transformers():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)


def save_tiny_causal_lm(out_dir: Path) -> None:
    _save(*build_tiny_causal_lm(), out_dir)


def save_tiny_reward(out_dir: Path) -> None:
    _save(*build_tiny_reward(), out_dir)
