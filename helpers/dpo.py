"""Direct preference optimization (DPO, Rafailov et al. 2023): RLHF without a reward model or RL.

PPO needs four models and a sampling loop: the reward model learned from the rankings, a value
model, the policy, and the frozen SFT model it is held to by a KL penalty. DPO starts from the
same objective, reward minus beta times the KL to the SFT model, and notices that its best
policy has a closed form, pi*(y|x) proportional to pi_SFT(y|x) * exp(r(x, y) / beta). Turned
around, every policy pi defines the reward it is best for:

    r(x, y) = beta * log(pi(y|x) / pi_ref(y|x))  (+ a term of x alone, which cancels in a pair)

Put that "implicit reward" into the reward model's pairwise loss and the reward model is no
longer needed: the policy itself is trained on the comparison data,

    loss = -log sigmoid( beta * [ log pi(y_w|x) / pi_ref(y_w|x) - log pi(y_l|x) / pi_ref(y_l|x) ] )

with y_w the answer the labeler preferred, y_l the other, pi_ref the frozen SFT model, and
log pi(y|x) the sum of the log-probabilities of the answer's tokens (the prompt is given, not
generated, so its tokens do not count). beta plays the KL coefficient's part: small, the policy
may move far from the SFT model to fit the preferences; large, it stays close.

No sampling happens during training: DPO learns from the answers the labelers ranked, which
the SFT model wrote before training started (offline), while PPO learns from answers the
policy writes as it changes (online).

``dpo_loss`` below is the formula written out, the one the exercise checks and a test holds
equal to what TRL's ``DPOTrainer`` computes; ``train_dpo`` trains through ``DPOTrainer``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from helpers import trainer_progress
from helpers.config import device
from helpers.models import load_causal_lm, quiet_loading
from helpers.rankings import Ranking
from helpers.reward import preference_dataset, rm_accuracy
from helpers.sft import build_sft_example, scratch_dir, trainer_defaults
from helpers.trainer_progress import TrainerProgress

# --------------------------------------------------------------------------------------------
# The log-probability of an answer
# --------------------------------------------------------------------------------------------


def _right_padded(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def conversation_logprobs(model, tokenizer, prompts: list[str], responses: list[str],
                          max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every token's log-probability in each conversation, and which tokens are the answer's:
    (token_logprobs, answer_mask), both (N, T - 1), right-padded, one batch.

    The conversation is rendered as SFT renders it (``sft.build_sft_example``), and its
    assistant mask picks the tokens that count: the answer and the EOS that ends it (stopping is
    part of the answer), not the user turn or the "<|assistant|>" marker (given, not generated),
    and not padding. Position t's logits predict token t + 1, so column t holds the log-prob of
    token t + 1; padding columns hold 0. ``max_length`` cuts each conversation to its first
    tokens, as the trainer does. Gradients flow.
    """
    model_device = next(model.parameters()).device
    examples = [build_sft_example(tokenizer, p, r) for p, r in zip(prompts, responses)]
    if max_length is not None:
        examples = [{k: v[:max_length] for k, v in e.items()} for e in examples]
    # Right padding: every row starts at position 0, so the default position ids are right.
    input_ids = _right_padded([e["input_ids"] for e in examples], tokenizer.pad_token_id).to(model_device)
    attention = _right_padded([[1] * len(e["input_ids"]) for e in examples], 0).to(model_device)
    counted = _right_padded([e["assistant_mask"] for e in examples], 0).to(model_device)
    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
    token_logprobs = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    token_logprobs = token_logprobs * attention[:, 1:]  # padding: 0, whatever the model says there
    return token_logprobs, counted[:, 1:]


def sequence_logprobs(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 64,
                      max_length: int | None = None) -> torch.Tensor:
    """log pi(response | prompt) of each pair: the sum of the answer tokens' log-probabilities, (N,),
    in batches of ``batch_size`` (``conversation_logprobs`` says which tokens count). Gradients
    flow; wrap the call in ``torch.no_grad()`` to only evaluate.
    """
    out = []
    for start in range(0, len(prompts), batch_size):
        out.append(answer_logprobs(*conversation_logprobs(model, tokenizer, prompts[start:start + batch_size],
                                                          responses[start:start + batch_size], max_length)))
    return torch.cat(out) if out else torch.zeros(0)


def answer_logprobs(token_logprobs: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """log pi(answer | prompt) of each row: the sum of its tokens' log-probabilities where
    ``answer_mask`` is 1 (the answer and its EOS), (N, T) -> (N,). The prompt's tokens and the
    padding are left out whatever their values (a padding position may hold any number)."""
    return torch.where(answer_mask.bool(), token_logprobs, torch.zeros_like(token_logprobs)).sum(-1)


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's loss over a batch of pairs, and the implicit rewards of both answers of each pair.

    Every argument but beta: (N,) sequence log-probs (``sequence_logprobs``) of the preferred
    ("chosen") and the other ("rejected") answer of N pairs, under the policy being trained and
    under the frozen reference (the SFT model).

        chosen_rewards   = beta * (policy_chosen - ref_chosen)       log-ratios, scaled by beta
        rejected_rewards = beta * (policy_rejected - ref_rejected)
        loss = mean over pairs of -log sigmoid(chosen_rewards - rejected_rewards)

    This is the reward model's pairwise loss with the implicit reward in place of a learned one.
    Before training the policy is the reference: both rewards are 0 and the loss is log 2. The
    rewards are returned detached: they are for watching (their margin, how often chosen wins),
    not for gradients.
    """
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def dpo_loss_from_token_logprobs(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                                 ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, chosen_mask: torch.Tensor,
                                 rejected_mask: torch.Tensor, beta: float):
    """``dpo_loss`` from token log-probabilities: (loss, chosen_rewards, rejected_rewards).

    Every tensor but beta is (N, T): position t of row i holds the log-probability of token t of
    conversation i (prompt, then answer, then padding) given the tokens before it, under the
    policy or the reference; the masks are 1 on the answer's tokens (and its EOS) only. Each
    answer's log-probability is the sum over its own tokens (``answer_logprobs``); the rest is
    ``dpo_loss``. Summing over the prompt too would leave the loss unchanged (the prompt's
    log-ratio is the same in both answers of a pair and cancels) but shift every implicit
    reward by the prompt's log-ratio.
    """
    return dpo_loss(answer_logprobs(policy_chosen, chosen_mask), answer_logprobs(policy_rejected, rejected_mask),
                    answer_logprobs(ref_chosen, chosen_mask), answer_logprobs(ref_rejected, rejected_mask), beta)


# --------------------------------------------------------------------------------------------
# The comparison data as pairs, and how a model orders them
# --------------------------------------------------------------------------------------------


def ranking_pairs(rankings: list[Ranking]) -> tuple[list[str], list[str], list[str]]:
    """(prompts, chosen, rejected): every preference pair of every ranking, one entry per pair.

    A ranking of K answers gives up to C(K, 2) pairs (ties give none). DPO, like TRL's trainer,
    treats them as independent examples.
    """
    prompts, chosen, rejected = [], [], []
    for r in rankings:
        for w, l in r.pairs():
            prompts.append(r.prompt)
            chosen.append(r.responses[w])
            rejected.append(r.responses[l])
    return prompts, chosen, rejected


@dataclass
class ImplicitRewards:
    """The implicit rewards beta * log(pi / pi_ref) of both answers of some pairs."""

    chosen: torch.Tensor
    rejected: torch.Tensor

    @property
    def margin(self) -> float:
        """Mean of chosen - rejected: how much more the policy moved toward the preferred answer."""
        return float((self.chosen - self.rejected).mean()) if self.chosen.numel() else math.nan

    @property
    def accuracy(self) -> float:
        """Share of pairs whose preferred answer gets the strictly higher implicit reward (a tie,
        as before training, is not a win)."""
        return rm_accuracy(self.chosen, self.rejected)


@torch.no_grad()
def implicit_rewards(policy, reference, tokenizer, rankings: list[Ranking], beta: float,
                     max_length: int | None = None) -> ImplicitRewards:
    """The implicit rewards the policy gives the answers of every pair of ``rankings``.

    On held-out rankings this is DPO's test: does the policy raise the answers labelers prefer
    over the others on prompts it was not trained on? The mean margin starts at exactly 0 (the
    policy is the reference) and should grow.
    """
    prompts, chosen, rejected = ranking_pairs(rankings)
    for model in (policy, reference):
        model.eval()
    logps = {name: sequence_logprobs(model, tokenizer, prompts + prompts, chosen + rejected,
                                     max_length=max_length).cpu()
             for name, model in (("policy", policy), ("reference", reference))}
    n = len(prompts)
    _, chosen_rewards, rejected_rewards = dpo_loss(logps["policy"][:n], logps["policy"][n:],
                                                   logps["reference"][:n], logps["reference"][n:], beta)
    return ImplicitRewards(chosen=chosen_rewards, rejected=rejected_rewards)


# --------------------------------------------------------------------------------------------
# Training with TRL
# --------------------------------------------------------------------------------------------


@dataclass
class DPOSettings:
    """What a DPO run does. The defaults are the full-mode tiny-profile run."""

    # The KL coefficient's part (the DPO paper: 0.1 to 0.5). Smaller lets the policy fit the
    # preferences further from the SFT model, and with noisy labels overfit them.
    beta: float = 0.1
    learning_rate: float = 5e-4  # far above TRL's 1e-6, which suits billion-parameter models
    epochs: int = 2
    batch_size: int = 32  # pairs per gradient step
    max_length: int = 160  # tokens of prompt + answer; the world's conversations fit
    warmup_ratio: float = 0.1
    n_rankings: int | None = None  # None: all of them
    seed: int = 0


@dataclass
class DPOHistory:
    """Curves of one DPO run: per logging step on the training pairs, per epoch on held-out pairs."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)  # mean chosen - rejected implicit reward
    accuracy: list[float] = field(default_factory=list)  # share of pairs with chosen ahead
    epoch: list[float] = field(default_factory=list)
    heldout_loss: list[float] = field(default_factory=list)
    heldout_margin: list[float] = field(default_factory=list)
    heldout_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def train_dpo(sft_path, tokenizer, rankings: list[Ranking], heldout: list[Ranking], settings: DPOSettings,
              progress: bool = True):
    """Train a policy from the SFT model on preference pairs with TRL's ``DPOTrainer``:
    (model, metrics, history).

    The policy is a trainable copy of the SFT model in ``sft_path``; the reference is another
    copy, frozen (given explicitly, so there is no doubt which model it is). The data are every
    pair of every ranking (``reward.preference_dataset``: conversational, so the trainer renders
    them with the course's chat template, as ``sequence_logprobs`` does). After every epoch the
    trainer's loss, margin and accuracy on the held-out pairs are logged. ``metrics`` holds the
    held-out margin and accuracy at the end, computed by ``implicit_rewards``.
    """
    import datasets
    from trl import DPOConfig, DPOTrainer

    if settings.n_rankings is not None:
        rankings = rankings[: settings.n_rankings]
    history = DPOHistory()
    train_data = preference_dataset(rankings)
    heldout_data = preference_dataset(heldout) if heldout else None
    steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    config = DPOConfig(
        output_dir=str(scratch_dir()),
        beta=settings.beta,
        loss_type=["sigmoid"],  # the DPO paper's loss (TRL offers many variants)
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(settings.warmup_ratio * steps_per_epoch * settings.epochs)),
        max_grad_norm=1.0,
        max_length=settings.max_length,
        eval_strategy="epoch" if heldout_data is not None else "no",
        logging_steps=max(1, steps_per_epoch // 4),
        **trainer_defaults(settings.seed),
    )

    def record(state, logs) -> dict:
        if "loss" in logs:
            history.step.append(state.global_step)
            history.loss.append(float(logs["loss"]))
            history.margin.append(float(logs.get("rewards/margins", math.nan)))
            history.accuracy.append(float(logs.get("rewards/accuracies", math.nan)))
        if "eval_loss" in logs:
            history.epoch.append(round(float(state.epoch or 0.0), 3))
            history.heldout_loss.append(float(logs["eval_loss"]))
            history.heldout_margin.append(float(logs.get("eval_rewards/margins", math.nan)))
            history.heldout_accuracy.append(float(logs.get("eval_rewards/accuracies", math.nan)))
        postfix = {}
        if history.loss:
            postfix.update(loss=f"{history.loss[-1]:.3f}", margin=f"{history.margin[-1]:.2f}")
        if history.heldout_margin:
            postfix["held-out margin"] = f"{history.heldout_margin[-1]:.2f}"
        return postfix

    datasets.disable_progress_bars()  # the dataset preparation bars say nothing to a student
    started = time.perf_counter()
    policy = load_causal_lm(sft_path, device())
    reference = load_causal_lm(sft_path, device())
    with quiet_loading():
        trainer = trainer_progress.quiet(DPOTrainer(
            model=policy, ref_model=reference, args=config, train_dataset=train_data, eval_dataset=heldout_data,
            processing_class=tokenizer, callbacks=[TrainerProgress("DPO", record, progress)]))
    trainer.train()
    history.seconds = time.perf_counter() - started
    model = trainer.model.to(device()).eval()
    final = implicit_rewards(model, reference, tokenizer, heldout, settings.beta, settings.max_length)
    metrics = {"heldout_margin": final.margin, "heldout_accuracy": final.accuracy,
               "train_pairs": len(train_data), "seconds": round(history.seconds, 1)}
    return model, metrics, history
