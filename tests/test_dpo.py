"""DPO: the loss by hand (and the mistakes an exercise must catch), answer log-probs that count
only the answer, our loss equal to what TRL's DPOTrainer computes, and a short run that raises
the preferred answers over the others on held-out prompts."""

import math

import pytest
import torch

from helpers import dpo, labelers
from helpers.models import build_causal_lm
from helpers.reward import preference_dataset
from helpers.sft import build_sft_example


def _nll_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))  # -log sigmoid(x)


# Two pairs: (policy chosen, policy rejected, reference chosen, reference rejected)
PAIRS = torch.tensor([[-2.0, -3.0, -2.5, -2.0],
                      [-4.0, -1.0, -3.0, -2.0]])
BETA = 0.5


def _loss(*columns, beta=BETA):
    return dpo.dpo_loss(*columns, beta)


def _loss_value(*columns) -> float:
    return _loss(*columns)[0].item()


def test_dpo_loss_by_hand():
    loss, chosen, rejected = _loss(*PAIRS.T)
    # pair 1: chosen log-ratio -2 - (-2.5) = 0.5, rejected -3 - (-2) = -1 -> rewards 0.25, -0.5
    # pair 2: chosen -4 - (-3) = -1, rejected -1 - (-2) = 1            -> rewards -0.5, 0.5
    assert chosen.tolist() == pytest.approx([0.25, -0.5])
    assert rejected.tolist() == pytest.approx([-0.5, 0.5])
    expected = (_nll_sigmoid(0.75) + _nll_sigmoid(-1.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert not chosen.requires_grad and not rejected.requires_grad


def test_policy_equal_to_reference_gives_log_2():
    logps = torch.tensor([-3.0, -7.0, -1.0])
    loss, chosen, rejected = _loss(logps, logps - 2, logps, logps - 2)
    assert loss.item() == pytest.approx(math.log(2))
    assert chosen.abs().max().item() == 0 and rejected.abs().max().item() == 0


def test_each_common_mistake_gives_another_number():
    """An exercise tells these apart only if each gives a loss different from the right one."""
    pc, pr, rc, rr = PAIRS.T
    right = _loss_value(pc, pr, rc, rr)
    delta = (pc - rc) - (pr - rr)
    mistakes = {
        "no reference model": -torch.nn.functional.logsigmoid(BETA * (pc - pr)).mean(),
        "beta scales the loss, not the log-ratios": (BETA * -torch.nn.functional.logsigmoid(delta)).mean(),
        "divides by beta": -torch.nn.functional.logsigmoid(delta / BETA).mean(),
        "chosen and rejected swapped": _loss(pr, pc, rr, rc)[0],
        "sum instead of mean over pairs": _loss(pc, pr, rc, rr)[0] * len(pc),
    }
    for name, value in mistakes.items():
        assert abs(value.item() - right) > 1e-3, name


class UniformLM(torch.nn.Module):
    """A 'model' whose next-token distribution is uniform over the vocabulary: every token's
    log-prob is -log V, so a sequence's log-prob is -(tokens counted) * log V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = torch.zeros(*input_ids.shape, self.vocab) + self.anchor
        return type("Out", (), {"logits": logits})()


def test_sequence_logprobs_count_the_answer_and_its_eos_only(small_tokenizer):
    tok = small_tokenizer
    prompts = ["What is 2 plus 3?", "Reverse the words: red green blue and a much longer prompt"]
    responses = ["5", "blue green red"]
    model = UniformLM(len(tok))
    got = dpo.sequence_logprobs(model, tok, prompts, responses)
    log_v = math.log(len(tok))
    for i, (p, r) in enumerate(zip(prompts, responses)):
        example = build_sft_example(tok, p, r)
        answer_tokens = len(tok(" " + r, add_special_tokens=False)["input_ids"]) + 1  # + EOS
        assert sum(example["assistant_mask"]) == answer_tokens
        # padding (the first row is the shorter one) and the prompt count for nothing
        assert got[i].item() == pytest.approx(-answer_tokens * log_v, rel=1e-6)
        assert len(example["input_ids"]) - 1 > answer_tokens  # summing over the prompt too would differ


def test_sequence_logprobs_do_not_depend_on_the_batch(small_tokenizer):
    torch.manual_seed(0)
    model = build_causal_lm(small_tokenizer, "tiny").eval()
    prompts = ["What is 2 plus 3?", "Name a fruit.", "Reverse the words: red green blue"]
    responses = ["5", "An apple, a pear or a plum would all do.", "blue green red"]
    with torch.no_grad():
        together = dpo.sequence_logprobs(model, small_tokenizer, prompts, responses)
        alone = torch.cat([dpo.sequence_logprobs(model, small_tokenizer, [p], [r])
                           for p, r in zip(prompts, responses)])
    assert together.tolist() == pytest.approx(alone.tolist(), abs=1e-4)


def _gold_rankings(n_prompts: int, seed: int):
    examples, responses = labelers.calibration_set(n_prompts=n_prompts, k=4, seed=seed)
    return [labelers.gold_labeler_ranking(e, rs) for e, rs in zip(examples, responses)]


def test_our_loss_equals_what_dpo_trainer_computes(small_tokenizer):
    """TRL's DPOTrainer, on one batch holding every pair, computes exactly dpo_loss over
    sequence_logprobs (the order of the rows does not matter for a mean)."""
    from trl import DPOConfig, DPOTrainer

    tok = small_tokenizer
    torch.manual_seed(0)
    policy = build_causal_lm(tok, "tiny")
    torch.manual_seed(1)  # another model as the reference, so the log-ratios are not all 0
    reference = build_causal_lm(tok, "tiny").eval()
    rankings = _gold_rankings(4, seed=5)
    data = preference_dataset(rankings)
    config = DPOConfig(output_dir="/tmp/dpo-test", beta=0.3, per_device_train_batch_size=len(data),
                       max_length=128, report_to=[], use_cpu=True, dataloader_num_workers=0)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=data,
                         processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].size(0) == 2 * len(data)  # every pair: chosen rows, then rejected rows
    policy.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(policy, batch).item()
        prompts, chosen, rejected = dpo.ranking_pairs(rankings)
        logps = {name: dpo.sequence_logprobs(model, tok, prompts + prompts, chosen + rejected, max_length=128)
                 for name, model in (("policy", policy), ("reference", reference))}
    n = len(prompts)
    ours, chosen_rewards, _ = dpo.dpo_loss(logps["policy"][:n], logps["policy"][n:],
                                           logps["reference"][:n], logps["reference"][n:], 0.3)
    assert abs(trl_loss - math.log(2)) > 1e-3  # the two models differ: a loss with something in it
    assert ours.item() == pytest.approx(trl_loss, rel=1e-4)
    logged = trainer._metrics["eval"]["rewards/chosen"][-1]  # eval mode: logged under "eval"
    assert chosen_rewards.mean().item() == pytest.approx(logged, rel=1e-4, abs=1e-6)


def test_short_dpo_run_raises_the_heldout_margin(small_tokenizer, tmp_path, one_thread):
    tok = small_tokenizer
    torch.manual_seed(0)
    start = build_causal_lm(tok, "tiny")
    start.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    train, held = _gold_rankings(80, seed=1), _gold_rankings(20, seed=2)
    settings = dpo.DPOSettings(beta=0.5, learning_rate=3e-3, epochs=2, batch_size=32, max_length=128)
    model, metrics, history = dpo.train_dpo(tmp_path / "sft", tok, train, held, settings, progress=False)
    assert history.loss[-1] < history.loss[0] < math.log(2) + 0.05
    assert len(history.heldout_margin) == settings.epochs
    # the policy started as the reference (margin 0); the labelers' choices are now ahead
    assert metrics["heldout_margin"] > 0.1, metrics
    assert metrics["heldout_accuracy"] > 0.6, metrics
    reference = type(model).from_pretrained(tmp_path / "sft").eval()
    again = dpo.implicit_rewards(model, reference, tok, held, settings.beta, settings.max_length)
    assert again.margin == pytest.approx(metrics["heldout_margin"], rel=1e-4)
