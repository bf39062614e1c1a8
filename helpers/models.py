"""The course's models: a small Llama-style transformer built from a config, and the
reward/value model made from it.

Every model is a ``transformers`` model, saved with ``save_pretrained`` and loaded with
``from_pretrained``, so the tiny profile runs the same code as the gpu profile (a hub model).
The tiny models have the architecture of the gpu profile's SmolLM2 (Llama: rotary position
embeddings, RMSNorm, a gated MLP), only far smaller.

Why not GPT-2? Most Instruction World tasks need the model to copy words from the prompt
(reverse, sort, shorten, greet by name). With the same size and recipe, a GPT-2 with learned
absolute positions learns to copy much more slowly than the Llama-style model, whose rotary positions
make "the word N tokens back" the same pattern everywhere; the Llama-style model also trains
faster per step on a CPU (``benchmarks/base_copying.py`` compares them).
``architecture="gpt2"`` still builds a GPT-2, to compare.

Sizes. The tiny profile must train on a 2-core CPU in minutes, yet be large enough to partly
learn the Instruction World's tasks (so SFT is imperfect and RLHF has something to improve):

* ``tiny`` (about 1.2M parameters: 4 layers, 4 heads, width 128) is the course's main model.
* ``big`` (about 5.4x the parameters: 6 layers, 8 heads, width 256), trained on the same corpus
  for fewer steps (``helpers.profiles``), plays GPT-3 175B in "a small aligned model beats a big
  base model".
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel,
                          LlamaConfig, LlamaForCausalLM)
from transformers.utils import logging as hf_logging

ARCHITECTURES = ("llama", "gpt2")


@dataclass(frozen=True)
class ModelSize:
    """The shape of a model (names as in ``GPT2Config``; ``build_causal_lm`` maps them to
    ``LlamaConfig``'s)."""

    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int = 256  # longest sequence; prompts and replies of the world fit easily
    # Dropout is off by default: the models are small and see each pretraining block about
    # once, so they underfit rather than overfit. It also keeps PPO's probability ratios exact
    # (dropout makes two forward passes of the same model disagree).
    dropout: float = 0.0
    architecture: str = "llama"  # or "gpt2"


MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(n_layer=4, n_head=4, n_embd=128),
    "big": ModelSize(n_layer=6, n_head=8, n_embd=256),
}


def model_size(size: str | ModelSize) -> ModelSize:
    if isinstance(size, ModelSize):
        return size
    if size not in MODEL_SIZES:
        raise ValueError(f"Unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    return MODEL_SIZES[size]


def build_causal_lm(tokenizer, size: str | ModelSize = "tiny"):
    """A freshly initialized causal LM whose vocabulary and special tokens match ``tokenizer``."""
    shape = model_size(size)
    if shape.architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {shape.architecture!r}; choose one of {ARCHITECTURES}")
    tokens = dict(
        vocab_size=len(tokenizer),  # len() counts the added special tokens too
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # pad_token_id is read by the sequence-classification head (reward and value models)
        # to find the last real token of each row.
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,  # input and output embeddings share one matrix
    )
    if shape.architecture == "gpt2":
        config = GPT2Config(n_positions=shape.n_positions, n_embd=shape.n_embd, n_layer=shape.n_layer,
                            n_head=shape.n_head, resid_pdrop=shape.dropout, embd_pdrop=shape.dropout,
                            attn_pdrop=shape.dropout, **tokens)
        return GPT2LMHeadModel(config)
    config = LlamaConfig(
        hidden_size=shape.n_embd,
        intermediate_size=4 * shape.n_embd,  # the gated MLP's inner width
        num_hidden_layers=shape.n_layer,
        num_attention_heads=shape.n_head,
        num_key_value_heads=shape.n_head,  # plain multi-head attention
        max_position_embeddings=shape.n_positions,
        attention_dropout=shape.dropout,
        **tokens,
    )
    return LlamaForCausalLM(config)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct trainable parameters (a tied matrix counts once)."""
    # parameters() yields a shared (tied) tensor only once
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, 2, ... counted over real tokens only.

    With left padding a row's first real token sits at some column c > 0; it must still get
    position 0, or the same text would look different to the model padded and unpadded. Pads
    get position 0 (they are masked anyway).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of the last 1 of each row of ``mask`` (batch,) -> (batch,); 0 for an all-0 row."""
    columns = torch.arange(mask.size(-1), device=mask.device)
    return (columns * mask.long()).argmax(-1)


def token_values(value_model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The scalar head applied at every position: (batch, seq).

    A sequence-classification model (``AutoModelForSequenceClassification``, one label) only
    returns the head's output at the last real token. PPO's value model needs a value for every
    prefix, and a reward model that averages over the answer needs the head at every answer
    token, so we run the transformer and apply its ``score`` head to every position ourselves.
    """
    hidden = value_model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                    position_ids=position_ids_from_mask(attention_mask),
                                    use_cache=False).last_hidden_state
    return value_model.score(hidden).squeeze(-1).float()


def value_model_from_causal_lm(model):
    """A value model built from a causal LM's body with a fresh scalar head (no RM available)."""
    config = copy.deepcopy(model.config)
    config.num_labels = 1
    value_model = AutoModelForSequenceClassification.from_config(config)
    value_model.base_model.load_state_dict(model.base_model.state_dict())
    with torch.no_grad():
        value_model.score.weight.zero_()  # values start at 0 rather than at random numbers
    return value_model.to(next(model.parameters()).device).eval()



@contextlib.contextmanager
def quiet_loading():
    """Hide transformers' per-file progress bars and notes while saving or loading a small model
    (they flash by in well under a second and clutter a notebook's output)."""
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_causal_lm(path: str | Path, device: str | torch.device | None = None):
    """A causal LM saved with ``save_pretrained`` (ours or a hub model's copy), in float32 (a
    bfloat16 checkpoint would lose most fine-tuning updates: see ``helpers.precision``)."""
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.to(device) if device is not None else model


def load_reward_model(path: str | Path, device: str | torch.device | None = None):
    """A scalar-output model initialized from a saved causal LM: the reward (or value) model.

    ``AutoModelForSequenceClassification`` keeps the transformer and replaces the language-model
    head (width -> vocabulary) with a fresh linear "score" head (width -> 1). The score of a
    sequence is read at its last real token: the head takes the rightmost token that is not
    ``config.pad_token_id``, which is right for left and right padding alike as long as the pad
    token differs from EOS (EOS ends every reply and must be readable).

    Loading prints nothing about the new head: that it starts untrained is the point. The weights
    are float32 whatever the checkpoint's dtype (``helpers.precision`` says why).
    """
    with quiet_loading():  # also silences "score.weight newly initialized": expected here
        model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32)
    if model.config.pad_token_id is None:
        raise ValueError(
            f"The model saved in {path} has no pad_token_id in its config, so the reward head "
            "cannot tell padding from text. Save it with a tokenizer that has a pad token."
        )
    return model.to(device) if device is not None else model


def describe_size(size: str | ModelSize) -> dict:
    """The size's fields, for printing and for a stage's settings."""
    return asdict(model_size(size))
