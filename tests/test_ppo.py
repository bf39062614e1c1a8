"""PPO for language models: the invariants a correct implementation holds, and a run that learns.

Everything runs on a tiny randomly initialized Llama-style model (2 layers, width 32) with a 300-token
tokenizer trained on a few hundred world documents (``small_tokenizer``), so the file takes seconds.
"""

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from helpers import logprobs as lp
from helpers import masked, ppo, pretrain, world
from helpers.models import ModelSize, build_causal_lm, value_model_from_causal_lm
from helpers.tokenizer import render_chat

TINY = ModelSize(n_layer=2, n_head=2, n_embd=32, n_positions=128, dropout=0.1)


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_models(policy, tokenizer) -> ppo.PPOModels:
    """A run's models for a reward function instead of a reward model: the policy, a frozen copy
    of it as the reference, and a fresh value model."""
    return ppo.PPOModels(policy=policy, reference=copy.deepcopy(policy),
                         value_model=value_model_from_causal_lm(policy), reward_model=None, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def tokenizer(small_tokenizer):
    return small_tokenizer


@pytest.fixture(scope="module")
def prompts():
    return world.prompts("ppo", seed=0, n=64)


def make_policy(tokenizer, seed=0):
    torch.manual_seed(seed)
    return build_causal_lm(tokenizer, TINY)


def vowel_share(examples, responses):
    """A toy reward the policy can learn quickly: the share of vowels among the response's characters."""
    return [sum(c in "aeiou" for c in r) / max(1, len(r)) for r in responses]


def small_config(**changes):
    base = dict(total_episodes=32, batch_size=16, minibatch_size=8, ppo_epochs=2, max_new_tokens=12,
                temperature=0.7, reward_norm_prompts=16, learning_rate=1e-2, value_learning_rate=1e-3,
                kl_coef=0.0, anneal_lr=False)
    return ppo.PPOConfig(**{**base, **changes})


def rollout_of(policy, reference, value_model, tokenizer, examples, config, seed=0):
    rollout = ppo.sample_responses(policy, tokenizer, examples, config, seed=seed)
    return ppo.evaluate_rollout(rollout, policy, reference, value_model, config)


# --- invariants ---------------------------------------------------------------------------------


def test_first_ratio_is_exactly_one_with_dropout_and_temperature(tokenizer, prompts):
    policy = make_policy(tokenizer)
    assert policy.config.attention_dropout == 0.1  # dropout is configured: only eval mode switches it off
    ids = tokenizer([render_chat(prompts[0].prompt)], return_tensors="pt")["input_ids"]
    policy.train()
    assert not torch.equal(policy(ids).logits, policy(ids).logits)  # dropout on: passes differ

    config = small_config(total_episodes=16, temperature=0.7)
    history = ppo.train_ppo(toy_models(policy, tokenizer), prompts, config, progress=False, reward_fn=vowel_share)
    assert history["first_ratio_error"][0] < 1e-6
    assert history["clipfrac"][0] > 0  # and the update did move the policy afterwards


def test_logprobs_use_the_sampling_temperature(tokenizer, prompts):
    policy = make_policy(tokenizer).eval()
    config = small_config(temperature=0.7)
    rollout = ppo.sample_responses(policy, tokenizer, prompts[:4], config, seed=0)
    args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length)
    with torch.no_grad():
        at_t = lp.response_logprobs(policy, *args, temperature=0.7)
        logits = policy(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                        position_ids=(rollout.attention_mask.cumsum(-1) - 1).clamp(min=0)).logits
    # by hand: column prompt_length - 1 + t predicts response token t
    p = rollout.prompt_length
    by_hand = torch.log_softmax(logits[:, p - 1:-1] / 0.7, -1).gather(-1, rollout.input_ids[:, p:, None])[..., 0]
    assert torch.allclose(at_t, by_hand, atol=1e-5)
    assert not torch.allclose(at_t, lp.response_logprobs(policy, *args, temperature=1.0), atol=1e-3)


def test_kl_is_zero_when_policy_is_the_reference(tokenizer, prompts):
    policy = make_policy(tokenizer)
    reference = copy.deepcopy(policy)
    config = small_config()
    rollout = rollout_of(policy, reference, value_model_from_causal_lm(policy), tokenizer, prompts[:16], config)
    for estimator in ("k1", "k3"):
        kl = ppo.per_token_kl(rollout.logprobs, rollout.ref_logprobs, rollout.response_mask, estimator)
        assert torch.equal(kl, torch.zeros_like(kl))


class ConstantHidden(torch.nn.Module):
    """Stands in for the final norm: every position gets the same hidden state."""

    def __init__(self, vector: torch.Tensor):
        super().__init__()
        self.register_buffer("vector", vector)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.vector.expand_as(hidden)


def test_rollout_stops_at_the_first_eos(tokenizer, prompts):
    policy = make_policy(tokenizer)
    with torch.no_grad():  # the final hidden state points at EOS's embedding: P(EOS) is about 0.15
        eos = policy.get_input_embeddings().weight[tokenizer.eos_token_id].clone()
        policy.model.norm = ConstantHidden(4.0 * eos / eos.dot(eos))
    config = small_config(temperature=1.0, max_new_tokens=8)
    rollout = ppo.sample_responses(policy, tokenizer, prompts[:16], config, seed=1)
    response = rollout.input_ids[:, rollout.prompt_length:]
    lengths = rollout.response_mask.sum(1)
    assert rollout.ended_with_eos.any() and (lengths < response.size(1)).any()
    for row, n in enumerate(lengths.tolist()):
        eos_at = (response[row, :n] == tokenizer.eos_token_id).nonzero().flatten().tolist()
        if rollout.ended_with_eos[row]:
            assert eos_at == [n - 1]  # the EOS is the last real token, and the only one
        else:
            assert eos_at == [] and n == response.size(1)
        assert (response[row, n:] == tokenizer.pad_token_id).all()
        assert (rollout.attention_mask[row, rollout.prompt_length + n:] == 0).all()


def brute_force_gae(rewards, values, mask, gamma, lam):
    """Double loop over the real tokens of each row: A_t = sum_l (gamma lam)^l delta_{t+l}."""
    advantages = torch.zeros_like(rewards, dtype=torch.float64)
    for b in range(rewards.size(0)):
        real = mask[b].nonzero().flatten().tolist()
        for i, t in enumerate(real):
            total = 0.0
            for l, k in enumerate(real[i:]):
                next_value = values[b, real[i + l + 1]].item() if i + l + 1 < len(real) else 0.0
                delta = rewards[b, k].item() + gamma * next_value - values[b, k].item()
                total += (gamma * lam) ** l * delta
            advantages[b, t] = total
    return advantages


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.7), (1.0, 1.0), (0.99, 0.0)])
def test_gae_equals_brute_force_sum(gamma, lam):
    g = torch.Generator().manual_seed(int(gamma * 100 + lam * 10))
    lengths = [7, 3, 1, 5, 7]
    mask = (torch.arange(7)[None] < torch.tensor(lengths)[:, None]).float()
    rewards = torch.randn(5, 7, generator=g, dtype=torch.float64) * mask
    values = torch.randn(5, 7, generator=g, dtype=torch.float64)  # garbage on padding, too
    advantages, returns = ppo.gae(rewards, values, mask, gamma, lam)
    expected = brute_force_gae(rewards, values, mask, gamma, lam)
    assert torch.allclose(advantages, expected, atol=1e-10)
    assert torch.allclose(returns, (expected + values) * mask, atol=1e-10)
    # any layout: the same rows left-padded give the same numbers on the real tokens
    flipped = torch.stack([torch.roll(m, int(7 - m.sum())) for m in mask])
    rolled = lambda x: torch.stack([torch.roll(r, int(7 - m.sum())) for r, m in zip(x, mask)])  # noqa: E731
    left_adv, _ = ppo.gae(rolled(rewards), rolled(values), flipped, gamma, lam)
    assert torch.allclose(left_adv, rolled(expected), atol=1e-10)


def _padded_batch(tokenizer, pairs, extra_left, extra_right):
    """[prompt | response] ids for (prompt text, response ids) pairs, with extra padding columns."""
    pad = tokenizer.pad_token_id
    prompts = [tokenizer(render_chat(p), add_special_tokens=False)["input_ids"] for p, _ in pairs]
    width_p = max(map(len, prompts)) + extra_left
    width_r = max(len(r) for _, r in pairs) + extra_right
    ids, mask = [], []
    for prompt, (_, response) in zip(prompts, pairs):
        left, right = width_p - len(prompt), width_r - len(response)
        ids.append([pad] * left + prompt + response + [pad] * right)
        mask.append([0] * left + [1] * (len(prompt) + len(response)) + [0] * right)
    return torch.tensor(ids), torch.tensor(mask), width_p, width_r


def _per_token(lengths, width, numbers, fill):
    out = torch.full((len(lengths), width), fill)
    for row, n in enumerate(lengths):
        out[row, :n] = numbers[row, :n]
    return out


def test_padding_never_changes_a_loss(tokenizer, prompts):
    policy = make_policy(tokenizer).eval()
    value_model = value_model_from_causal_lm(policy)
    with torch.no_grad():
        value_model.score.weight.normal_()  # values that vary from token to token
    g = torch.Generator().manual_seed(0)
    lengths = [5, 2, 8]
    pairs = [(prompts[i].prompt, torch.randint(10, 290, (n,), generator=g).tolist()) for i, n in enumerate(lengths)]
    numbers = {name: torch.randn(3, 8, generator=g) for name in ("old_logprobs", "advantages", "old_values", "returns")}
    losses = []
    for extra_left, extra_right in [(0, 0), (3, 0), (0, 4), (6, 2)]:
        ids, mask, p, r = _padded_batch(tokenizer, pairs, extra_left, extra_right)
        response_mask = _per_token(lengths, r, torch.ones(3, 8), 0.0)
        x = {k: _per_token(lengths, r, v, 100.0) for k, v in numbers.items()}  # padding: large garbage
        logprobs = lp.response_logprobs(policy, ids, mask, p, temperature=0.8)
        values = lp.response_values(value_model, ids, mask, p)
        scores = lp.sequence_scores(value_model, ids, mask)
        losses.append(torch.stack([
            ppo.clipped_policy_loss(logprobs, x["old_logprobs"] - 3, x["advantages"], response_mask),
            ppo.clipped_value_loss(values, x["old_values"], x["returns"], response_mask),
            *scores,
        ]))
    for other in losses[1:]:
        assert torch.allclose(other, losses[0], atol=1e-5), (other, losses[0])


def test_the_score_sits_on_the_last_real_token():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0, 9.0], [0.5, -0.5, 0.0, 0.1, 0.2], [0.4, 9.0, 9.0, 9.0, 9.0]])
    rewards = ppo.token_rewards(torch.tensor([1.0, 2.0, -3.0]), kl, mask, beta=0.1)
    expected = torch.tensor([[-0.01, -0.02, -0.03 + 1.0, 0.0, 0.0],
                             [-0.05, 0.05, 0.0, -0.01, -0.02 + 2.0],
                             [-0.04 - 3.0, 0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(rewards, expected, atol=1e-7)


def test_whitening_ignores_masked_positions():
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(6)[None] < torch.tensor([6, 2, 4])[:, None]).float()
    x = 3 + 2 * torch.randn(3, 6, generator=g)
    garbage = torch.where(mask.bool(), x, torch.full_like(x, 1e6))
    zeros = torch.where(mask.bool(), x, torch.zeros_like(x))
    white = masked.masked_whiten(garbage, mask)
    assert torch.allclose(white, masked.masked_whiten(zeros, mask))
    real = white[mask.bool()]
    assert abs(real.mean().item()) < 1e-6 and abs(real.var().item() - 1) < 1e-5
    assert (white[~mask.bool()] == 0).all()


def test_kl_estimators_and_adaptive_beta():
    logp, ref = torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[-1.5, -1.0, -0.5]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(ppo.per_token_kl(logp, ref, mask, "k1"), torch.tensor([[0.5, -1.0, 0.0]]))
    k3 = ppo.per_token_kl(logp, ref, mask, "k3")
    r = torch.exp(ref - logp)
    assert torch.allclose(k3, ((r - 1) - torch.log(r)) * mask) and (k3 >= 0).all()

    control = ppo.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert control.update(12.0, 64) == pytest.approx(0.1 * (1 + 0.2 * 64 / 10_000))  # error clipped at 0.2
    before = control.value
    assert control.update(6.6, 64) == pytest.approx(before * (1 + 0.1 * 64 / 10_000))
    assert control.update(0.0, 64) < control.value + 1e-12 < before * 1.01


def test_scorer_normalizes_and_penalizes_missing_eos():
    scorer = ppo.Scorer(reward_fn=vowel_share)
    raw = torch.tensor([1.0, 2.0, 3.0, 6.0])
    scorer.fit_normalization(raw)
    config = ppo.PPOConfig(missing_eos_penalty=1.0, score_clip=1.2)
    final = scorer.final(raw, torch.tensor([True, True, False, True]), config)
    normalized = (raw - raw.mean()) / raw.std()
    assert torch.allclose(scorer.gain * raw + scorer.bias, normalized, atol=1e-6)
    assert torch.allclose(final, normalized.clamp(-1.2, 1.2) - torch.tensor([0, 0, 1.0, 0]), atol=1e-6)


def test_sequence_scores_agree_with_the_reward_module(tokenizer, prompts):
    from helpers.reward import score

    reward_model = value_model_from_causal_lm(make_policy(tokenizer)).eval()
    with torch.no_grad():
        reward_model.score.weight.normal_()
    reward_model.config.reward_offset = 0.25
    responses = ["I don't know.", "Tarsk", "a b c d e f g"]
    examples = prompts[:3]
    # what a policy writes after "<|assistant|>": the space the chat format puts there, the reply, EOS
    pairs = [(e.prompt, tokenizer(" " + r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
             for e, r in zip(examples, responses)]
    ids, mask, _, _ = _padded_batch(tokenizer, pairs, 2, 3)
    with torch.no_grad():
        ours = lp.sequence_scores(reward_model, ids, mask)
    theirs = score(reward_model, tokenizer, [e.prompt for e in examples], responses)
    assert torch.allclose(ours, theirs, atol=1e-5)


# --- whole runs -----------------------------------------------------------------------------------


def test_a_short_run_raises_the_reward(tokenizer, prompts):
    policy = make_policy(tokenizer)
    # 30 iterations: over policy seeds 0 / 1 / 2 the mean of the last three scores is 0.51 / 0.52 /
    # 0.95 at 30 iterations (0.31 / 0.52 / 0.95 at 20), against the required start + 0.25 (about 0.36)
    config = small_config(total_episodes=16 * 30)
    history = ppo.train_ppo(toy_models(policy, tokenizer), prompts, config, progress=False, reward_fn=vowel_share)
    start, end = history["score"][0], sum(history["score"][-3:]) / 3
    assert end > start + 0.25, history["score"]
    assert history["kl"][-1] > 1.0  # it got there by moving away from the reference
    assert history["entropy"][-1] < history["entropy"][0]
    for name in ("approx_kl", "clipfrac", "value_clipfrac", "explained_variance", "response_length",
                 "eos_share", "beta", "policy_loss", "value_loss", "time_generation", "time_update"):
        assert len(history[name]) == config.n_iterations


def test_runs_are_deterministic_and_ptx_and_callback_work(tokenizer, prompts):
    def run():
        policy = make_policy(tokenizer)
        texts = world.pretraining_corpus(seed=0, n_docs=100)
        seen = []
        config = small_config(kl_coef=0.05, kl_target=1.0, kl_horizon=100, ptx_coef=0.5, ptx_batch_size=2)
        history = ppo.train_ppo(
            toy_models(policy, tokenizer), prompts, config, callback=lambda i, stats: seen.append((i, stats["samples"])), progress=False,
            reward_fn=vowel_share, gold_fn=lambda examples, responses: [float(len(r) < 20) for r in responses],
            ptx_batches=pretrain.pretraining_batches(tokenizer, texts, batch_size=2, seq_len=32))
        return history, seen

    first, seen = run()
    second, _ = run()
    for name in ("score", "kl", "policy_loss", "value_loss", "ptx_loss", "gold", "beta"):
        assert first[name] == second[name], name
    assert [i for i, _ in seen] == [0, 1] and len(seen[0][1]) == 3 and "response" in seen[0][1][0]
    assert first["beta"][1] != first["beta"][0]  # adaptive beta moved


# --- speed: packed sequences ----------------------------------------------------------------------


def _padded_rollout(tokenizer, prompts, lengths, extra_left=3, extra_right=4, seed=1):
    """A rollout of random response tokens of the given lengths, with extra padding on both sides."""
    g = torch.Generator().manual_seed(seed)
    pairs = [(prompts[i].prompt, torch.randint(10, 290, (n,), generator=g).tolist()) for i, n in enumerate(lengths)]
    ids, mask, p, r = _padded_batch(tokenizer, pairs, extra_left, extra_right)
    response_mask = _per_token(lengths, r, torch.ones(len(lengths), max(lengths)), 0).long()
    return ppo.Rollout(examples=list(prompts[:len(lengths)]), responses=[""] * len(lengths), input_ids=ids,
                       attention_mask=mask, prompt_length=p, response_mask=response_mask,
                       ended_with_eos=torch.ones(len(lengths), dtype=torch.bool))


def test_packing_keeps_every_real_token_once(tokenizer, prompts):
    lengths = [5, 2, 8, 1, 3, 8, 6]
    rollout = _padded_rollout(tokenizer, prompts, lengths)
    packed = lp.pack_sequences(rollout.input_ids, rollout.attention_mask, rollout.prompt_length)
    assert packed.input_ids.size(0) < len(lengths)  # fewer rows than the batch
    real = rollout.attention_mask.sum().item()
    assert (packed.position_ids == 0).sum() >= len(lengths)  # every sequence starts at position 0
    assert packed.input_ids.numel() < rollout.input_ids.numel() and packed.input_ids.numel() >= real
    # one source per real response token, each predicting its token from the packed column before it
    assert len(packed.source) == sum(lengths)
    flat_ids = packed.input_ids.flatten()
    assert torch.equal(flat_ids[packed.source + 1], packed.tokens)
    rows, columns = packed.target
    assert torch.equal(packed.tokens, rollout.input_ids[rows, columns + rollout.prompt_length])
    assert rollout.response_mask[rows, columns].all()


def test_packed_sequences_give_the_losses_and_gradients_of_a_padded_batch(tokenizer, prompts):
    """The invariant behind ``pack_sequences``: computing the policy's log-probs and the values on
    packed sequences (no padding) changes no loss and no gradient, up to float rounding, against
    the plain padded batch."""
    policy = make_policy(tokenizer).eval()
    value_model = value_model_from_causal_lm(policy)
    with torch.no_grad():
        value_model.score.weight.normal_()  # values that vary from token to token
    lengths = [5, 2, 8, 1, 3, 8, 6]
    rollout = _padded_rollout(tokenizer, prompts, lengths)
    mask = rollout.response_mask
    g = torch.Generator().manual_seed(2)
    old = {k: torch.randn(mask.shape, generator=g) for k in ("logprobs", "advantages", "values", "returns")}
    args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length)

    def loss_and_gradients(logprobs, values):
        loss = (ppo.clipped_policy_loss(logprobs, old["logprobs"] - 2, old["advantages"], mask)
                + ppo.clipped_value_loss(values, old["values"], old["returns"], mask))
        return loss, torch.autograd.grad(loss, [*policy.parameters(), *value_model.parameters()])

    plain_logprobs, plain_entropy = lp.response_logprobs(policy, *args, temperature=0.8, with_entropy=True)
    plain_values = lp.response_values(value_model, *args)
    plain_loss, plain_grads = loss_and_gradients(plain_logprobs, plain_values)
    packed = lp.pack_sequences(*args)
    logprobs, entropy = lp.packed_response_logprobs(policy, packed, temperature=0.8, with_entropy=True)
    values = lp.packed_response_values(value_model, packed)
    loss, grads = loss_and_gradients(logprobs, values)

    real = mask.bool()
    for ours, plain in [(logprobs, plain_logprobs), (entropy, plain_entropy), (values, plain_values)]:
        assert torch.allclose(ours[real], plain[real], atol=1e-5)
        assert (ours[~real] == 0).all()  # padding: exactly 0
    assert torch.allclose(loss, plain_loss, atol=1e-6)
    for packed_grad, plain_grad in zip(grads, plain_grads):
        assert torch.allclose(packed_grad, plain_grad, atol=1e-6, rtol=1e-4)


def test_ppo_update_on_packed_sequences_matches_the_padded_update(tokenizer, prompts):
    """Whole ``ppo_update``s from the same state, packed and padded: the same losses, diagnostics
    and trained weights (up to float rounding)."""
    policy = make_policy(tokenizer).eval()
    value_model = value_model_from_causal_lm(policy)
    lengths = [5, 2, 8, 1, 3, 8, 6, 4]
    rollout = _padded_rollout(tokenizer, prompts, lengths)
    config = small_config(batch_size=8, minibatch_size=4, ppo_epochs=2, temperature=0.8, pack_sequences=False)
    ppo.evaluate_rollout(rollout, policy, copy.deepcopy(policy), value_model, config)
    g = torch.Generator().manual_seed(3)
    advantages = torch.randn(rollout.response_mask.shape, generator=g) * rollout.response_mask
    returns = torch.randn(rollout.response_mask.shape, generator=g) * rollout.response_mask
    before = torch.cat([w.detach().flatten() for w in [*policy.parameters(), *value_model.parameters()]])
    results = []
    for pack in (False, True):
        config.pack_sequences = pack
        p, v = copy.deepcopy(policy), copy.deepcopy(value_model)
        stats = ppo.ppo_update(p, v, ppo.make_optimizer(p, v, config), rollout, advantages, returns, config,
                               torch.Generator().manual_seed(0))
        results.append((stats, torch.cat([w.detach().flatten() for w in [*p.parameters(), *v.parameters()]])))
    (padded, padded_weights), (packed, packed_weights) = results
    for name in ("policy_loss", "value_loss", "approx_kl", "ratio_mean", "clipfrac", "value_clipfrac"):
        assert packed[name] == pytest.approx(padded[name], rel=1e-4, abs=1e-6), name
    assert packed["first_ratio_error"] < 1e-6
    assert not torch.allclose(padded_weights, before)  # the update moved the weights ...
    assert torch.allclose(packed_weights, padded_weights, atol=1e-5)  # ... the same way
