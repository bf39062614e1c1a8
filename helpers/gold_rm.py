"""The gold labeler of the gpu profile: a public reward model from the hub.

On the tiny profile the rubric of ``helpers.labelers`` says what people really want. Hub prompts
(``meta["source"] == "hub"``) have no rubric, so, as in Gao et al. 2022 ("Scaling laws for reward
model overoptimization"), a strong public reward model plays the humans: its scores are the gold
preferences the simulated labelers start from, and the yardstick every model is measured with.
Which model: ``profiles.hub_id("gold_rm")`` (a hub id, or a local folder through
``COURSE_HUB_GOLD_RM``).

``scores(prompts, responses)`` scores (prompt, response) pairs the way the model's card does:
the pair becomes a [user, assistant] conversation rendered with the reward model's own chat
template. Scores are remembered per (prompt, response): the same K answers are scored by the
gold ranking, by every simulated labeler, by the noise calibration and by the evaluation, and a
0.6B model should read each of them once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from helpers import config, profiles
from helpers.hub import from_hub
from helpers.progress import tqdm

#: Tokens of one rendered conversation the model reads at most. Longer ones lose their start
#: (``truncation_side="left"``): the score is read at the last token, so the end of the answer
#: must survive; a long prompt losing its opening words matters less than a cut-off answer.
MAX_LENGTH = 1024
#: Pairs to score before a progress bar is worth showing (``progress=None``).
PROGRESS_FROM = 256


@dataclass
class _GoldRM:
    """The loaded reward model, its tokenizer, and the scores it has given."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    memo: dict[tuple[str, str], float] = field(default_factory=dict)


# One gold reward model per process: it is 0.6B parameters, and every stage scores with it.
_loaded: _GoldRM | None = None


def _weights_dtype(device: torch.device) -> torch.dtype:
    """Half precision on a GPU (the model only scores, it never trains, so rounding its weights
    costs nothing that matters and halves its memory beside a PPO run's four models); bfloat16
    where the GPU has it, else float16 (a T4). float32 elsewhere: a CPU emulates 16 bits slowly."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load() -> _GoldRM:
    """The gold reward model of ``profiles.hub_id("gold_rm")``, loaded once per process.

    If the id changes (another ``COURSE_HUB_GOLD_RM``), the new model replaces the old one, and
    the remembered scores go with it: they were another model's.
    """
    global _loaded
    name = profiles.hub_id("gold_rm")
    if _loaded is not None and _loaded.name == name:
        return _loaded
    _loaded = None  # free the old model before loading a new one
    device = config.device()
    tokenizer = from_hub(AutoTokenizer.from_pretrained, name)
    model = from_hub(AutoModelForSequenceClassification.from_pretrained, name,
                     dtype=_weights_dtype(device))
    # XForSequenceClassification reads the score at the rightmost token that is not
    # ``config.pad_token_id``, and refuses batches of more than one without it: the padding we
    # add must carry exactly that id.
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.pad_token_id = model.config.pad_token_id
    # Right padding: every text keeps positions 0, 1, ... as when it is read alone, so a score
    # does not depend on what else is in the batch (left padding would shift the positions).
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    model.to(device).eval()
    _loaded = _GoldRM(name=name, model=model, tokenizer=tokenizer)
    return _loaded


def clear() -> None:
    """Forget the loaded model and its scores (tests that swap models; freeing GPU memory)."""
    global _loaded
    _loaded = None


def render(tokenizer, prompt: str, response: str) -> str:
    """The (prompt, response) pair as the reward model was trained to read it: a [user,
    assistant] conversation in its chat template. Tokenizing adds the bos token again where the
    model has one, so a template that already starts with it would give two: one is removed."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
        tokenize=False)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        text = text[len(bos):]
    return text


@torch.no_grad()
def _forward(rm: _GoldRM, texts: list[str]) -> list[float]:
    batch = rm.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                         max_length=MAX_LENGTH).to(rm.model.device)
    last = batch["attention_mask"].sum(dim=1) - 1  # right padding: each text's last token
    ends = batch["input_ids"][torch.arange(len(texts), device=last.device), last]
    if (ends == rm.model.config.pad_token_id).any():
        # The model would read the score at an earlier token, silently: better to stop.
        raise ValueError(f"The gold reward model {rm.name!r} uses its pad token "
                         f"({rm.tokenizer.pad_token!r}) as the last token of a conversation, so it "
                         "cannot tell the end of a text from padding; give its config another "
                         "pad_token_id.")
    logits = rm.model(**batch).logits  # (batch, 1): one score per text
    return logits[:, 0].float().cpu().tolist()


def scores(prompts: list[str], responses: list[str], batch_size: int = 16,
           progress: bool | None = None) -> list[float]:
    """The gold reward model's score of each (prompt, response) pair, as floats.

    Pairs scored before (by this process, with this model) are not read again. The new ones are
    read longest first in batches of ``batch_size``, so texts of similar length share a batch
    and little time goes to padding. ``progress``: a progress bar; None shows one from
    ``PROGRESS_FROM`` new pairs on.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    rm = load()
    pairs = list(zip(prompts, responses))
    new = list(dict.fromkeys(p for p in pairs if p not in rm.memo))
    if new:
        texts = {pair: render(rm.tokenizer, *pair) for pair in new}
        new.sort(key=lambda pair: len(texts[pair]), reverse=True)
        show = len(new) >= PROGRESS_FROM if progress is None else progress
        with tqdm(total=len(new), desc="gold RM", unit="answer", disable=not show) as bar:
            for start in range(0, len(new), batch_size):
                chunk = new[start:start + batch_size]
                for pair, value in zip(chunk, _forward(rm, [texts[p] for p in chunk])):
                    rm.memo[pair] = value
                bar.update(len(chunk))
    return [rm.memo[pair] for pair in pairs]
