"""Step 1 of InstructGPT: supervised fine-tuning (SFT) on demonstrations.

Labelers wrote the answer they wanted for each prompt; the base model is fine-tuned to produce
those answers. Two ideas carry the whole stage:

* a conversation becomes one token sequence through the chat template, whose
  ``{% generation %}`` block marks the assistant's tokens;
* the loss is the next-token loss on the assistant's tokens only: the prompt is given, not
  learned, and padding is not text at all.

Training itself uses TRL's ``SFTTrainer`` with ``assistant_only_loss=True``: the maintained
library route. ``masked_sft_loss`` below is the same loss written out, the one the exercise
checks and a test holds equal to what the trainer computes.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from helpers import evaluation, generation, precision, trainer_progress
from helpers.config import device
from helpers.trainer_progress import TrainerProgress
from helpers.world import Example

# --------------------------------------------------------------------------------------------
# From a conversation to a training example
# --------------------------------------------------------------------------------------------


def conversation(prompt: str, response: str | None = None) -> list[dict]:
    """The chat messages of one demonstration (or of a prompt alone, to generate from)."""
    messages = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def build_sft_example(tokenizer, prompt: str, response: str) -> dict[str, list[int]]:
    """Token ids of a demonstration and the mask of the tokens the model must learn.

    ``assistant_mask[t]`` is 1 on the response and on the EOS that ends it (the model must learn
    to stop), and 0 on the user turn and the ``<|assistant|>`` marker (they are given).
    """
    encoded = tokenizer.apply_chat_template(
        conversation(prompt, response), tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True)
    return {"input_ids": list(encoded["input_ids"]),
            "assistant_mask": list(encoded["assistant_masks"])}


def masked_sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    assistant_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the assistant's tokens of a batch.

    logits: (batch, seq, vocab); the other three: (batch, seq). Position t predicts token t+1,
    so the target tokens, and the masks that pick them, are shifted by one. The mean is over
    every counted token of the batch (a long answer weighs more than a short one, as in TRL).
    """
    targets = input_ids[:, 1:]
    counted = (assistant_mask[:, 1:] * attention_mask[:, 1:]).to(logits.dtype)
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                targets.reshape(-1), reduction="none").view_as(counted)
    return (per_token * counted).sum() / counted.sum().clamp(min=1.0)


# --------------------------------------------------------------------------------------------
# Training with TRL
# --------------------------------------------------------------------------------------------


@dataclass
class SFTSettings:
    """What an SFT run does. The defaults are the full-mode tiny-profile run."""

    epochs: int = 6
    learning_rate: float = 2e-3
    batch_size: int = 32
    max_length: int = 128
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    n_demonstrations: int | None = None  # None: all of them
    validation_share: float = 0.1
    eval_prompts_per_epoch: int = 120  # held-out prompts scored by the gold labeler per epoch
    eval_max_new_tokens: int = 48  # longest answer generated for that score (a cut answer scores low)
    seed: int = 0


def split_demonstrations(demos: list[Example], validation_share: float, seed: int):
    """Hold out a share of the demonstrations (by prompt text, so no prompt is in both)."""
    prompts = sorted({d.prompt for d in demos})
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: max(1, int(len(prompts) * validation_share))])
    return [d for d in demos if d.prompt not in held], [d for d in demos if d.prompt in held]


def _as_dataset(demos: list[Example]):
    from datasets import Dataset

    return Dataset.from_list([{"messages": conversation(d.prompt, d.response)} for d in demos])


@dataclass
class SFTHistory:
    """Curves of one SFT run, one entry per logging step / per epoch."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    gold_score: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def train_sft(model, tokenizer, demos: list[Example], settings: SFTSettings,
              progress: bool = True) -> SFTHistory:
    """Fine-tune ``model`` in place on ``demos`` with TRL's SFTTrainer; return the curves.

    After every epoch the validation loss on held-out demonstrations is logged, and the gold
    labeler scores the model's answers to those held-out prompts: the paper's observation that
    validation loss overfits while the quality of answers keeps improving is checked this way.
    """
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer


    if settings.n_demonstrations is not None:
        demos = demos[: settings.n_demonstrations]
    train, held_out = split_demonstrations(demos, settings.validation_share, settings.seed)
    probe = held_out[: settings.eval_prompts_per_epoch]
    history = SFTHistory()

    class EpochProbe(TrainerCallback):
        """Score answers to held-out prompts with the gold labeler after every epoch."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                history.step.append(state.global_step)
                history.train_loss.append(float(logs["loss"]))
            if "eval_loss" in logs:
                history.epoch.append(round(float(state.epoch or 0.0), 3))
                history.val_loss.append(float(logs["eval_loss"]))
                answers = generation.generate(model, tokenizer, [p.prompt for p in probe],
                                              temperature=0.0, max_new_tokens=settings.eval_max_new_tokens)
                history.gold_score.append(evaluation.mean_gold_score(probe, answers))
                model.train()

    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    config = SFTConfig(
        output_dir=str(scratch_dir()),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(settings.warmup_ratio * steps_per_epoch * settings.epochs)),
        weight_decay=settings.weight_decay,
        max_length=settings.max_length,
        assistant_only_loss=True,
        eval_strategy="epoch",
        logging_steps=max(1, steps_per_epoch // 4),
        **trainer_defaults(settings.seed),
    )

    def shown(state, logs) -> dict:
        postfix = {}  # EpochProbe, called first, has just recorded the curves
        if history.train_loss:
            postfix["loss"] = f"{history.train_loss[-1]:.3f}"
        if history.val_loss:
            postfix["val"] = f"{history.val_loss[-1]:.3f}"
            postfix["gold"] = f"{history.gold_score[-1]:.2f}"
        return postfix

    import datasets

    datasets.disable_progress_bars()  # the dataset preparation bars say nothing to a student
    trainer = trainer_progress.quiet(SFTTrainer(
        model=model, args=config, train_dataset=_as_dataset(train), eval_dataset=_as_dataset(held_out),
        processing_class=tokenizer, callbacks=[EpochProbe(), TrainerProgress("SFT", shown, progress)]))
    started = time.perf_counter()
    trainer.train()
    history.seconds = time.perf_counter() - started
    model.eval()
    return history


def trainer_defaults(seed: int) -> dict:
    """Trainer settings every TRL route of the course shares: no checkpoints or loggers, seeded,
    CPU unless CUDA is there, no trainer progress bar (the course draws its own), float32 weights
    with 16-bit arithmetic only on a GPU (``helpers.precision``: TRL's default ``bf16=True`` would
    emulate bfloat16 on a CPU), and no activation checkpointing (TRL's default: it trades speed
    for memory that models this size do not need)."""
    return dict(save_strategy="no", report_to=[], seed=seed, data_seed=seed,
                use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0,
                **precision.trainer_flags(device()), **no_activation_checkpointing())


def no_activation_checkpointing() -> dict:
    """The config field that turns activation (gradient) checkpointing off, which TRL's configs
    turn on by default: slower, and not needed by models this size. transformers 5.23 renamed
    ``gradient_checkpointing`` to ``activation_checkpointing`` (the old name warns, then goes in
    v6); Colab's 5.15 knows only the old one. So: the name the installed version has."""
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: False}


def scratch_dir() -> Path:
    """A fresh temporary folder for a trainer's output_dir (the course saves nothing there)."""
    return Path(tempfile.mkdtemp(prefix="sft-"))
