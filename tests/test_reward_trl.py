"""The library route to a reward model: TRL's RewardTrainer on the course's rankings.

TRL must read the very tokens our own scorer reads and compute the same loss, and a short run on
a clear preference must teach a tiny model to order held-out pairs.
"""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from helpers import reward, sft, world
from helpers.labelers import Ranking
from helpers.models import ModelSize, build_causal_lm, quiet_loading
from helpers.pipeline import load_or_train

MICRO = ModelSize(n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def sft_folder(tmp_path_factory, course_artifacts):
    """A micro model saved like an SFT artifact (model and tokenizer in one folder)."""
    tokenizer = load_or_train("tokenizer").tokenizer
    torch.manual_seed(0)
    model = build_causal_lm(tokenizer, MICRO)
    path = tmp_path_factory.mktemp("sft")
    with quiet_loading():
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, tokenizer


def _rankings(examples, k=2):
    """Answer first, a needless refusal second (ordinary requests): a preference a model can see.
    With k=3 a third response, an "I don't know", sits between them."""
    out = []
    for e in examples:
        responses = [e.response, world.REFUSAL, world.IDK][:k]
        out.append(Ranking(e.id, e.prompt, e.family, responses, list(range(1, k + 1)), "test"))
    return out


def _ordinary(n, start=0):
    examples = [e for e in world.prompts("rm", n=4 * (n + start)) if e.family not in ("harmful", "unknown")]
    return examples[start:start + n]


def test_preference_dataset_has_one_row_per_pair_in_trl_format():
    rankings = _rankings(_ordinary(3), k=3)
    rankings[0].ranks = [1, 2, 2]  # a tie: 2 pairs instead of 3
    data = reward.preference_dataset(rankings)
    assert len(data) == 2 + 3 + 3
    row = data[0]
    assert row["prompt"] == [{"role": "user", "content": rankings[0].prompt}]
    assert row["chosen"] == [{"role": "assistant", "content": rankings[0].responses[0]}]
    assert row["rejected"][0]["role"] == "assistant"


def test_trl_reads_our_tokens_and_computes_our_loss(sft_folder):
    from trl import RewardConfig, RewardTrainer

    path, tokenizer = sft_folder
    rankings = _rankings(_ordinary(5), k=3)  # 15 pairs, all in one batch
    config = RewardConfig(output_dir=str(path / "trl"), per_device_train_batch_size=15, report_to=[],
                          use_cpu=True, bf16=False, max_length=160, dataloader_num_workers=0,
                          **sft.no_activation_checkpointing())
    with quiet_loading():
        trainer = RewardTrainer(model=str(path), args=config, train_dataset=reward.preference_dataset(rankings),
                                processing_class=tokenizer)
    # the tokens of the first pair: the chat template, as our scorer renders it
    first = trainer.train_dataset[0]
    ours = reward._encode_pairs(tokenizer, [rankings[0].prompt], [rankings[0].responses[0]], 160)
    assert first["chosen_ids"] == ours["input_ids"][0].tolist()
    assert tokenizer.decode(first["chosen_ids"]).endswith("<|endoftext|>")

    model = trainer.model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, batch).item()
        scored = reward.score_pairs(model, tokenizer, rankings)  # offset 0: raw rewards
    ours = -F.logsigmoid(scored.chosen - scored.rejected).mean().item()
    assert trl_loss == pytest.approx(ours, rel=1e-4)
    # no ties, 3 pairs per prompt: the mean over shuffled pairs is the mean of the ranking losses
    per_prompt = torch.stack([reward.ranking_loss(r, k.pairs()) for r, k in zip(scored.rewards, rankings)])
    assert per_prompt.mean().item() == pytest.approx(ours, rel=1e-5)


def test_a_short_trl_run_learns_a_clear_preference(sft_folder):
    path, tokenizer = sft_folder
    train, heldout = _rankings(_ordinary(64)), _rankings(_ordinary(24, start=64))
    settings = reward.RMSettings(epochs=3, learning_rate=3e-3, pairs_per_batch=16)
    model, metrics, history = reward.train_with_trl(path, tokenizer, train, heldout, settings, progress=False)
    assert set(metrics) == {"heldout_accuracy", "train_accuracy", "seconds", "responses_read"}
    assert metrics["responses_read"] == 2 * 64 * 3  # both responses of every pair, each epoch
    assert len(history.loss) == math.ceil(64 / 16) * 3
    assert history.loss[-1] < history.loss[0]
    assert metrics["heldout_accuracy"] >= 0.9, metrics
    assert metrics["heldout_accuracy"] == reward.heldout_accuracy(model, tokenizer, heldout)
    assert isinstance(model, torch.nn.Module) and not model.training


def test_rm_accuracy_counts_strict_wins_only():
    chosen = torch.tensor([1.0, 0.5, 0.2, -1.0])
    rejected = torch.tensor([0.0, 0.5, 0.3, -2.0])
    assert reward.rm_accuracy(chosen, rejected) == 0.5  # the tie is not a win
    assert reward.rm_accuracy(torch.zeros(3), torch.zeros(3)) == 0.0  # a constant RM scores 0
    assert math.isnan(reward.rm_accuracy(torch.zeros(0), torch.zeros(0)))
