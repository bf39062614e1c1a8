"""A TRL trainer's progress as the course shows it: one bar, and the curves kept as history.

The trainers of transformers and TRL print a dict of numbers at every logging step and draw a bar
of their own. Every library route of the course (SFT, the reward model, DPO, GRPO) replaces both
with one ``helpers.progress`` bar (which the course runner also reads) and keeps what it logs as
the curves its notebook draws.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from helpers.progress import tqdm


class TrainerProgress(TrainerCallback):
    """One bar over a trainer's steps. ``record(state, logs)`` sees every dict the trainer logs
    (training losses, evaluation results), keeps what the history needs and returns the bar's
    postfix (a dict of short strings), or None to leave it as it is."""

    def __init__(self, desc: str, record: Callable[[object, dict], dict | None], show: bool = True):
        self.desc, self.record, self.show = desc, record, show
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=self.desc, disable=not self.show)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        postfix = self.record(state, logs or {})
        if postfix:
            self.bar.set_postfix(postfix)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def quiet(trainer):
    """The trainer without its own bar and printed logs (a ``TrainerProgress`` replaces them)."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    return trainer
