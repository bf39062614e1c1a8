"""Several ways of aligning one model, measured alike: gold score against KL from the SFT model.

PPO, DPO, GRPO and best-of-n each trade distance from the SFT model for reward. Their training
logs say how far they went, but each in its own way: PPO logs the KL of each training batch
summed over an answer's tokens, GRPO the mean per-token k3 estimate, DPO none at all. To put them
on one figure, every policy here is measured by the same function on the same prompts:

* sample answers to the evaluation prompts at temperature 1 (the policy's own distribution);
* KL from SFT: for every sampled answer y, log pi(y|x) - log pi_SFT(y|x), summed over its tokens
  (the EOS included), averaged over the answers. That is the k1 Monte Carlo estimate of
  KL(pi || pi_SFT) in nats per answer, the quantity PPO's penalty charges for. Single answers can
  come out negative; the average cannot, up to sampling noise. The SFT model itself is at exactly 0;
* the gold labeler's mean score of the same answers, and the win rate over SFT's own samples:
  answer j of a policy against SFT's answer j to the same prompt (ties count half), averaged per
  prompt, with a bootstrap interval over prompts.

Best-of-n is measured on samples too, but its KL is the formula log n - (n - 1)/n (Stiennon et
al. 2020), an upper bound: the probability of a best-of-n answer has no cheap closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from helpers import evaluation, generation, labelers, reward
from helpers.logprobs import response_logprobs
from helpers.world import Example

# --------------------------------------------------------------------------------------------
# Sampling a policy, and its KL from the SFT model
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def answer_kl(policy, reference, details: dict, batch_size: int = 64) -> torch.Tensor:
    """log pi(y|x) - log pi_ref(y|x) of every sampled answer, summed over its tokens: (N,).

    ``details`` is what ``generation.generate(..., return_details=True)`` returns: the exact
    tokens sampled (re-tokenizing the text could give others), prompts left-padded, answers
    right-padded, ``response_mask`` 1 on the answer's tokens and its EOS. Both models read them
    at temperature 1, in eval mode.
    """
    out = []
    prompt_length = details["prompt_length"]
    for start in range(0, details["input_ids"].size(0), batch_size):
        ids = details["input_ids"][start:start + batch_size]
        mask = details["attention_mask"][start:start + batch_size]
        counted = details["response_mask"][start:start + batch_size].float()
        per_model = []
        for model in (policy, reference):
            device = next(model.parameters()).device
            model.eval()
            per_model.append(response_logprobs(model, ids.to(device), mask.to(device), prompt_length).cpu())
        out.append(((per_model[0] - per_model[1]) * counted).sum(-1))
    return torch.cat(out) if out else torch.zeros(0)


@dataclass
class PolicySamples:
    """A policy's sampled answers to some prompts: ``texts[i][j]`` is answer j to prompt i, with
    its KL from SFT (``kl[i, j]``, nats) and its gold score (``gold[i, j]``)."""

    texts: list[list[str]]
    kl: np.ndarray
    gold: np.ndarray

    @property
    def mean_kl(self) -> float:
        return float(self.kl.mean())

    @property
    def mean_gold(self) -> float:
        return float(self.gold.mean())


def sample_policy(policy, reference, tokenizer, examples: list[Example], samples: int, max_new_tokens: int,
                  seed: int = 0, batch_size: int = 64) -> PolicySamples:
    """``samples`` answers of ``policy`` to each prompt at temperature 1 (round j drawn with seed
    ``seed + j``), their KL from ``reference`` (``answer_kl``) and their gold scores."""
    prompts = [e.prompt for e in examples]
    texts = [[] for _ in examples]
    kl = np.zeros((len(examples), samples))
    gold = np.zeros((len(examples), samples))
    for j in range(samples):
        answers, details = generation.generate(policy, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                               temperature=1.0, seed=seed + j, batch_size=batch_size,
                                               return_details=True)
        kl[:, j] = answer_kl(policy, reference, details, batch_size).numpy()
        gold[:, j] = labelers.gold_scores(examples, answers)
        for i, answer in enumerate(answers):
            texts[i].append(answer)
    return PolicySamples(texts=texts, kl=kl, gold=gold)


# --------------------------------------------------------------------------------------------
# Win rates over SFT's samples
# --------------------------------------------------------------------------------------------


def paired_judgments(gold: np.ndarray, baseline_gold: np.ndarray) -> list[float]:
    """Per prompt, the share of its answers that beat the baseline's answer of the same round
    (answer j against baseline answer j; ties count half). ``gold`` may have more rounds than
    the baseline, or fewer: the first min(both) are compared. One number per prompt, so the
    bootstrap resamples prompts, not answers to one prompt (which are not independent)."""
    rounds = min(gold.shape[1], baseline_gold.shape[1])
    if gold.shape[0] != baseline_gold.shape[0] or rounds == 0:
        raise ValueError(f"scores of shape {gold.shape} and {baseline_gold.shape} cannot be paired")
    return [float(np.mean(evaluation.judgments(list(a[:rounds]), list(b[:rounds]))))
            for a, b in zip(gold, baseline_gold)]


def win_rate_over(gold: np.ndarray, baseline_gold: np.ndarray, n_boot: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """Win rate of a policy's answers over the baseline's with a 95% bootstrap interval."""
    return evaluation.bootstrap_ci(paired_judgments(gold, baseline_gold), n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------
# Best-of-n, as points of the same figure
# --------------------------------------------------------------------------------------------


def best_of_n_picks(proxy: np.ndarray, gold: np.ndarray, n: int) -> np.ndarray:
    """Per prompt, the gold score of the answer the reward model scores highest among the first
    ``n`` of the pool (``proxy[i, j]``, ``gold[i, j]``: answer j to prompt i): (prompts, 1)."""
    return np.array(evaluation.best_of_n(proxy.tolist(), gold.tolist(), n))[:, None]


def score_pool(reward_model, tokenizer, examples: list[Example], pool: PolicySamples) -> np.ndarray:
    """The reward model's score of every answer of a pool of samples: (prompts, answers)."""
    flat_prompts = [e.prompt for e, texts in zip(examples, pool.texts) for _ in texts]
    flat_texts = [t for texts in pool.texts for t in texts]
    scores = reward.score(reward_model, tokenizer, flat_prompts, flat_texts).numpy()
    return scores.reshape(len(examples), -1)


# --------------------------------------------------------------------------------------------
# What each method keeps in memory
# --------------------------------------------------------------------------------------------

#: Models of the policy's size each method holds while it trains: (kept in memory, trained).
#: PPO: policy, value model, reference, reward model; two of them learn. DPO: policy and the
#: frozen reference, nothing else. GRPO: policy, reference and the reward model it samples
#: against (against the gold labeler: the rubric on the tiny profile, no model; the gold reward
#: model on the gpu profile, 0.6B parameters, not counted here). Best-of-n: the SFT model and the
#: reward model, nothing trained, but n answers sampled and scored for every prompt it serves.
MODELS_IN_MEMORY = {"PPO": (4, 2), "DPO": (2, 1), "GRPO": (3, 1), "GRPO (gold reward)": (2, 1),
                    "best-of-n": (2, 0)}
