"""Step 2 of InstructGPT: a reward model (RM) learned from rankings.

The RM is the SFT model with its language-model head replaced by a scalar head: it reads a
prompt and a response and returns one number, r(x, y). It is trained so that, for every pair a
labeler ordered, the preferred response scores higher:

    loss = -1 / C(K, 2) * sum over pairs (w, l) of log sigmoid(r(x, y_w) - r(x, y_l))

InstructGPT put all C(K, 2) pairs of one prompt's ranking into one batch element: every response
is read once per epoch, and the pairs of one prompt are never split across batches (training on
shuffled pairs as if independent overfit within one epoch in the paper). ``train_reward_model``
does this; ``train_reward_model(grouped=False)`` is the shuffled-pairs comparison.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from helpers import precision, trainer_progress
from helpers.config import device
from helpers.models import last_real_index, load_reward_model, quiet_loading, token_values
from helpers.progress import tqdm
from helpers.rankings import Ranking
from helpers.sft import conversation, scratch_dir, trainer_defaults
from helpers.tokenizer import ASSISTANT
from helpers.trainer_progress import TrainerProgress

# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def ranking_loss(rewards: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Loss of one prompt's ranking: the mean of -log sigmoid(r_w - r_l) over its pairs.

    rewards: (K,) the RM's scores of the K responses; pairs: (winner, loser) indices, e.g. from
    ``rankings.preference_pairs``. Dividing by the number of pairs (C(K, 2) without ties) keeps a
    prompt with many responses from outweighing the others.
    """
    if not pairs:
        return rewards.sum() * 0.0  # nothing preferred: no signal, but keep the graph
    winners = torch.tensor([w for w, _ in pairs], device=rewards.device)
    losers = torch.tensor([l for _, l in pairs], device=rewards.device)
    return -F.logsigmoid(rewards[winners] - rewards[losers]).mean()


def pairwise_accuracy(rewards: torch.Tensor, pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """(correct, total): pairs where the RM scores the preferred response strictly higher."""
    correct = sum(int(rewards[w] > rewards[l]) for w, l in pairs)
    return correct, len(pairs)


def rm_accuracy(rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor) -> float:
    """Share of pairs where the RM scores the labeler's choice strictly higher than the other.

    rewards_chosen[i] and rewards_rejected[i] are the rewards of the preferred and the other
    response of pair i. A tie is not a correct answer: an RM that scores everything 0 must get
    0%, not 100%, or a broken model would look perfect. NaN when there are no pairs.
    """
    if rewards_chosen.numel() == 0:
        return math.nan
    return (rewards_chosen > rewards_rejected).double().mean().item()


# --------------------------------------------------------------------------------------------
# Scoring text
# --------------------------------------------------------------------------------------------


def _encode_pairs(tokenizer, prompts: list[str], responses: list[str], max_length: int):
    texts = [tokenizer.apply_chat_template(conversation(p, r), tokenize=False)
             for p, r in zip(prompts, responses)]
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                     max_length=max_length, add_special_tokens=False)


#: How the reward model turns its head's output into one score per answer.
#: "last": the head read at the last real token, as InstructGPT (and TRL's RewardTrainer) do;
#: "mean": the head applied at every token of the answer, averaged. Each answer token can then
#: check its own piece against the prompt (is this the name the user gave?) instead of squeezing
#: the whole judgment into the last position. Notebook 04 compares the two.
POOLINGS = ("last", "mean")


def pooling_of(model) -> str:
    """The pooling a reward model was trained with (its config's ``reward_pooling``; "last" if unset)."""
    return getattr(model.config, "reward_pooling", None) or "last"


def set_pooling(model, tokenizer, pooling: str) -> None:
    """Record in the model's config how it scores, so every later user (PPO too) does the same."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    model.config.reward_pooling = pooling
    model.config.answer_start_token_id = tokenizer.convert_tokens_to_ids(ASSISTANT)


def answer_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, start_token_id: int) -> torch.Tensor:
    """1 on the answer's tokens: every real token after the first ``start_token_id`` (the
    assistant marker that ends the prompt), EOS included; 0 on padding and the prompt."""
    started = (input_ids == start_token_id).long().cumsum(-1) > 0
    return (started & (input_ids != start_token_id) & attention_mask.bool()).to(attention_mask.dtype)


def pooled_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One score per row from the scalar head, pooled as the model was trained: (batch,)."""
    per_token = token_values(model, input_ids, attention_mask)  # (batch, seq)
    if pooling_of(model) == "mean":
        mask = answer_mask(input_ids, attention_mask, model.config.answer_start_token_id).float()
        return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_token[torch.arange(per_token.size(0), device=per_token.device), last_real_index(attention_mask)]


#: Longest (prompt, response) a reward model reads when its config does not say.
DEFAULT_MAX_LENGTH = 160


def raw_scores(model, tokenizer, prompts: list[str], responses: list[str],
               max_length: int = DEFAULT_MAX_LENGTH) -> torch.Tensor:
    """The scalar head's score of each (prompt, response), pooled as the model was trained."""
    device = next(model.parameters()).device
    batch = _encode_pairs(tokenizer, prompts, responses, max_length)
    return pooled_scores(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))


@torch.no_grad()
def score(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 64,
          max_length: int | None = None) -> torch.Tensor:
    """Rewards of (prompt, response) pairs, shifted so demonstrations score 0 on average. Texts are
    cut at the length the model was trained on (its config's ``reward_max_length``): cut shorter,
    a long answer would be judged without its end."""
    max_length = max_length or getattr(model.config, "reward_max_length", None) or DEFAULT_MAX_LENGTH
    model.eval()
    offset = float(getattr(model.config, "reward_offset", 0.0) or 0.0)
    out = [raw_scores(model, tokenizer, prompts[i:i + batch_size], responses[i:i + batch_size],
                      max_length)
           for i in range(0, len(prompts), batch_size)]
    return (torch.cat(out) if out else torch.zeros(0)).float().cpu() - offset


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class RMSettings:
    epochs: int = 1  # the paper: one epoch (more overfits)
    learning_rate: float = 1e-3
    prompts_per_batch: int = 8  # each prompt brings its K responses and C(K, 2) pairs
    pairs_per_batch: int = 48  # for the shuffled-pairs comparison
    weight_decay: float = 0.0
    max_length: int = 160
    grouped: bool = True
    pooling: str = "mean"  # see POOLINGS; "last" is the paper's
    seed: int = 0


@dataclass
class RMHistory:
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # training pairs, running
    seconds: float = 0.0
    responses_read: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _grouped_batches(rankings: list[Ranking], settings: RMSettings, rng: random.Random):
    order = list(range(len(rankings)))
    rng.shuffle(order)
    for i in range(0, len(order), settings.prompts_per_batch):
        group = [rankings[j] for j in order[i:i + settings.prompts_per_batch]]
        yield [(r.prompt, r.responses, r.pairs()) for r in group]


def _shuffled_pair_batches(rankings: list[Ranking], settings: RMSettings, rng: random.Random):
    pairs = [(r.prompt, r.responses[w], r.responses[l]) for r in rankings for w, l in r.pairs()]
    rng.shuffle(pairs)
    for i in range(0, len(pairs), settings.pairs_per_batch):
        # each pair is its own little "ranking" of two responses with one preference
        yield [(p, [w, l], [(0, 1)]) for p, w, l in pairs[i:i + settings.pairs_per_batch]]


def train_reward_model(model, tokenizer, rankings: list[Ranking], settings: RMSettings,
                       progress: bool = True) -> RMHistory:
    """Train ``model`` (a sequence classifier with one label) on rankings, in place."""
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    set_pooling(model, tokenizer, settings.pooling)
    model.config.reward_max_length = settings.max_length  # so later scoring reads as much as training did
    model_device = next(model.parameters()).device
    scaler = precision.grad_scaler(model_device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    batches_of = _grouped_batches if settings.grouped else _shuffled_pair_batches
    n_batches = sum(1 for _ in batches_of(rankings, settings, random.Random(0))) * settings.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, n_batches // 20)) *
        0.5 * (1 + math.cos(math.pi * min(s, n_batches) / max(1, n_batches))))
    history = RMHistory()
    started = time.perf_counter()
    model.train()
    bar = tqdm(total=n_batches, desc="reward model" + ("" if settings.grouped else " (shuffled pairs)"),
               disable=not progress)
    step = correct = total = 0
    for _ in range(settings.epochs):
        for batch in batches_of(rankings, settings, rng):
            prompts = [p for p, responses, _ in batch for _ in responses]
            responses = [r for _, rs, _ in batch for r in rs]
            with precision.autocast(model_device):  # 16-bit products on a GPU; float32 on a CPU
                rewards = raw_scores(model, tokenizer, prompts, responses, settings.max_length).float()
            losses, start = [], 0
            for _, rs, pairs in batch:
                mine = rewards[start:start + len(rs)]
                losses.append(ranking_loss(mine, pairs))
                c, t = pairwise_accuracy(mine.detach(), pairs)
                correct, total = correct + c, total + t
                start += len(rs)
            loss = torch.stack(losses).mean()
            optimizer.zero_grad()
            scaler.scale(loss).backward()  # float16 only: scaled so small gradients do not underflow
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            step += 1
            history.responses_read += len(responses)
            history.step.append(step)
            history.loss.append(loss.item())
            history.accuracy.append(correct / max(1, total))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / max(1, total):.2f}")
    bar.close()
    model.eval()
    history.seconds = time.perf_counter() - started
    return history


def train_reward_stage(rankings: list[Ranking], heldout: list[Ranking], sft_path, tokenizer,
                       settings: RMSettings, progress: bool = True):
    """An RM initialized from the SFT model and trained on rankings: (model, metrics, history)."""
    torch.manual_seed(settings.seed)
    model = load_reward_model(sft_path, device())
    history = train_reward_model(model, tokenizer, rankings, settings, progress=progress)
    metrics = {"heldout_accuracy": heldout_accuracy(model, tokenizer, heldout),
               "train_accuracy": history.accuracy[-1] if history.accuracy else None,
               "seconds": round(history.seconds, 1), "responses_read": history.responses_read}
    return model, metrics, history


def set_demonstration_offset(model, tokenizer, prompts: list[str], responses: list[str]) -> float:
    """Shift rewards so that the labelers' demonstrations score 0 on average (the paper's bias)."""
    model.config.reward_offset = 0.0
    mean = float(score(model, tokenizer, prompts, responses).mean())
    model.config.reward_offset = mean
    return mean


@dataclass
class ScoredPairs:
    """Every preference pair of some rankings with the RM's rewards of both responses.

    ``pairs[i]`` is (ranking, winner index, loser index); ``chosen[i]`` and ``rejected[i]`` are
    the rewards of that winner and loser; ``rewards[j]`` is the reward of ranking j's responses.
    """

    pairs: list[tuple[Ranking, int, int]]
    chosen: torch.Tensor
    rejected: torch.Tensor
    rewards: list[torch.Tensor]

    def accuracy(self) -> float:
        return rm_accuracy(self.chosen, self.rejected)


def score_pairs(model, tokenizer, rankings: list[Ranking]) -> ScoredPairs:
    """Score every response of ``rankings`` once and line up the rewards pair by pair."""
    prompts = [r.prompt for r in rankings for _ in r.responses]
    responses = [x for r in rankings for x in r.responses]
    flat = score(model, tokenizer, prompts, responses)
    per_ranking, pairs, chosen, rejected, start = [], [], [], [], 0
    for r in rankings:
        rewards = flat[start:start + len(r.responses)]
        per_ranking.append(rewards)
        for w, l in r.pairs():
            pairs.append((r, w, l))
            chosen.append(rewards[w])
            rejected.append(rewards[l])
        start += len(r.responses)
    as_tensor = lambda xs: torch.stack(xs) if xs else torch.zeros(0)  # noqa: E731
    return ScoredPairs(pairs, as_tensor(chosen), as_tensor(rejected), per_ranking)


def heldout_accuracy(model, tokenizer, rankings: list[Ranking]) -> float:
    """Share of held-out preference pairs the RM orders like the labeler did (0 if none)."""
    scored = score_pairs(model, tokenizer, rankings)
    return scored.accuracy() if scored.pairs else 0.0


# --------------------------------------------------------------------------------------------
# The library route: TRL's RewardTrainer on the same rankings
# --------------------------------------------------------------------------------------------


def preference_dataset(rankings: list[Ranking]):
    """Rankings as TRL's preference data: one row per (winner, loser) pair of every ranking.

    Conversational with an explicit prompt, as ``RewardTrainer`` expects:
    {"prompt": [user turn], "chosen": [assistant turn], "rejected": [assistant turn]}. The
    trainer joins prompt and answer and renders them with the chat template, so it reads the
    same tokens as ``score``. Each pair is a separate row: a ranking of K = 4 becomes up to 6
    rows, and the trainer shuffles them as if independent.
    """
    from datasets import Dataset

    rows = []
    for r in rankings:
        user = conversation(r.prompt)
        for w, l in r.pairs():
            rows.append({"prompt": user,
                         "chosen": [{"role": "assistant", "content": r.responses[w]}],
                         "rejected": [{"role": "assistant", "content": r.responses[l]}]})
    return Dataset.from_list(rows)


def train_with_trl(sft_path, tokenizer, rankings: list[Ranking], heldout: list[Ranking],
                   settings: RMSettings | None = None, progress: bool = True):
    """Train an RM from the SFT model with TRL's ``RewardTrainer``: (model, metrics, history).

    The same model (the SFT folder loaded by ``AutoModelForSequenceClassification`` with one
    label), the same loss (-log sigmoid(r_chosen - r_rejected)), learning rate, epochs and
    pairs per batch as ``train_reward_model(grouped=False)``: TRL's batches are shuffled pairs.
    ``metrics`` has the keys of ``train_reward_stage``; its seconds count dataset preparation
    (tokenizing), model loading and training.
    """
    import datasets
    from trl import RewardConfig, RewardTrainer

    settings = settings or RMSettings()
    history = RMHistory()
    train_data = preference_dataset(rankings)
    steps = math.ceil(len(train_data) / settings.pairs_per_batch) * settings.epochs
    config = RewardConfig(
        output_dir=str(scratch_dir()),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.pairs_per_batch,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),  # as our own loop: 5% warm-up, then a cosine decay
        weight_decay=settings.weight_decay,
        max_grad_norm=1.0,
        max_length=settings.max_length,
        logging_steps=1,
        **trainer_defaults(settings.seed),
    )

    correct = [0.0]  # the running sum of the batches' accuracies

    def record(state, logs) -> dict | None:
        if "loss" not in logs:
            return None
        history.step.append(state.global_step)
        history.loss.append(float(logs["loss"]))
        correct[0] += float(logs.get("accuracy", math.nan))
        history.accuracy.append(correct[0] / len(history.loss))  # running, as ours
        return {"loss": f"{history.loss[-1]:.3f}", "acc": f"{history.accuracy[-1]:.2f}"}

    datasets.disable_progress_bars()  # the dataset preparation bars say nothing to a student
    started = time.perf_counter()
    with quiet_loading():
        trainer = trainer_progress.quiet(RewardTrainer(
            model=str(sft_path), args=config, train_dataset=train_data, processing_class=tokenizer,
            callbacks=[TrainerProgress("reward model (TRL RewardTrainer)", record, progress)]))
    trainer.train()
    history.seconds = time.perf_counter() - started
    history.responses_read = 2 * len(trainer.train_dataset) * settings.epochs
    model = trainer.model.to(device())
    model.config.reward_max_length = settings.max_length
    model.eval()
    metrics = {"heldout_accuracy": heldout_accuracy(model, tokenizer, heldout),
               "train_accuracy": history.accuracy[-1] if history.accuracy else None,
               "seconds": round(history.seconds, 1), "responses_read": history.responses_read}
    return model, metrics, history
