"""The gpu profile's gold labeler (a hub reward model), on a tiny random stand-in built here.

The real gold RM (Skywork-Reward-V2-Qwen3-0.6B) cannot be downloaded in the tests, so a random
Qwen3ForSequenceClassification of a few thousand parameters, with a small byte-level BPE
tokenizer and a Qwen-style chat template, is saved to a folder and named by
``COURSE_HUB_GOLD_RM``, the way a course maintainer would point the course at a local copy.
"""

import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForSequenceClassification

from helpers import gold_rm, world
from helpers import labelers as L
from helpers.world import Example

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
QWEN_TEMPLATE = ("{% for message in messages %}"
                 "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                 "{% endfor %}")


def _world_texts(n: int = 400) -> list[str]:
    rng = random.Random(0)
    examples = [world.FAMILY_MAKERS[world.FAMILIES[i % len(world.FAMILIES)]](rng) for i in range(n)]
    return [f"{e.prompt} {e.response}" for e in examples]


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    """A tiny random gold RM with its tokenizer, saved as a hub model would be."""
    folder = tmp_path_factory.mktemp("gold_rm")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_world_texts(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, eos_token=IM_END,
                                        additional_special_tokens=[IM_START])
    tokenizer.chat_template = QWEN_TEMPLATE
    tokenizer.save_pretrained(folder)

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=8, num_labels=1, max_position_embeddings=512,
                         pad_token_id=None)  # the loader must take it from the tokenizer
    model = Qwen3ForSequenceClassification(config)
    with torch.no_grad():  # a random head gives scores of about 0.01: spread them over a few units
        model.score.weight.mul_(100.0)
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def gold(rm_folder, monkeypatch):
    """The tiny RM as the gold labeler, on the CPU in float32, with nothing remembered."""
    monkeypatch.setenv("COURSE_HUB_GOLD_RM", str(rm_folder))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    gold_rm.clear()
    yield rm_folder
    gold_rm.clear()


def hub_example(prompt: str) -> Example:
    return Example(prompt, "", "open_qa", {"source": "hub"})


def _answers(rng: random.Random, k: int) -> list[str]:
    texts = _world_texts(60)
    return [" ".join(rng.choice(texts).split()[:rng.randint(2, 12)]) for _ in range(k)]


def test_scores_are_the_models_own_forward_on_the_rendered_chat(gold):
    prompt, response = "What is the capital of Norway?", "Oslo is the capital."
    [score] = gold_rm.scores([prompt], [response])

    tokenizer = AutoTokenizer.from_pretrained(gold)
    model = Qwen3ForSequenceClassification.from_pretrained(gold).eval()
    text = (f"{IM_START}user\n{prompt}{IM_END}\n{IM_START}assistant\n{response}{IM_END}\n")
    assert gold_rm.render(tokenizer, prompt, response) == text
    with torch.no_grad():
        expected = model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item()
    assert isinstance(score, float)
    assert score == pytest.approx(expected, abs=1e-5)
    # The config had no pad id: the loader took the tokenizer's, which batches need.
    assert gold_rm.load().model.config.pad_token_id == tokenizer.convert_tokens_to_ids(PAD)


def test_render_strips_a_duplicated_bos(gold):
    tokenizer = AutoTokenizer.from_pretrained(gold)
    tokenizer.bos_token = PAD  # a model whose tokenizer adds a bos, and whose template adds it too
    plain = gold_rm.render(tokenizer, "Hi!", "Hello.")
    assert plain.startswith(IM_START)
    tokenizer.chat_template = "{{ bos_token }}" + QWEN_TEMPLATE
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], tokenize=False).startswith(PAD)
    assert gold_rm.render(tokenizer, "Hi!", "Hello.") == plain


def test_batching_and_padding_do_not_change_a_score(gold):
    short = ("Hi!", "Hello.")
    longer = [("Tell me how to paint a fence.", "First get a brush and paint, then paint the fence. " * k)
              for k in (3, 6, 9)]
    [alone] = gold_rm.scores(*zip(short))
    gold_rm.clear()
    prompts, responses = zip(*(longer[:2] + [short] + longer[2:]))
    batched = gold_rm.scores(list(prompts), list(responses), batch_size=4)
    assert batched[2] == pytest.approx(alone, abs=1e-5)
    assert len(set(np.round(batched, 4))) == 4  # the scores do differ between texts


def test_scores_are_remembered(gold):
    calls = []
    gold_rm.load().model.register_forward_hook(lambda *args: calls.append(1))
    prompts, responses = ["A?", "B?", "A?"], ["yes", "no", "yes"]
    first = gold_rm.scores(prompts, responses, batch_size=16)
    assert len(calls) == 1 and first[0] == first[2]
    assert gold_rm.scores(prompts, responses) == first
    assert len(calls) == 1  # nothing read twice
    gold_rm.scores(["A?", "C?"], ["yes", "maybe"])
    assert len(calls) == 2  # only the new pair


def test_gold_score_dispatches_on_the_examples_source(gold):
    example = hub_example("What is the capital of Norway?")
    [rm_score] = gold_rm.scores([example.prompt], ["Oslo."])
    assert L.gold_score(example, "Oslo.") == rm_score
    add = Example("What is 34 plus 12?", "46", "arithmetic", {"a": 34, "b": 12, "op": "plus", "answer": 46})
    assert L.gold_score(add, "The answer is 46.") == pytest.approx(0.7 + 0.3 * 0.65)  # the rubric
    mixed = L.gold_scores([add, example, add], ["46", "Oslo.", "17"])
    assert mixed == [L.gold_score(add, "46"), rm_score, L.gold_score(add, "17")]
    ranking = L.gold_labeler_ranking(example, ["Oslo.", "Bergen.", "I don't know."])
    answers = ["Oslo.", "Bergen.", "I don't know."]
    assert ranking.ranks == L.ranks_from_scores(gold_rm.scores([example.prompt] * 3, answers), 1e-9)


def test_gold_grade_on_a_hub_example_says_what_to_use(gold):
    with pytest.raises(ValueError, match=r"(?s)Instruction World.*gold_score"):
        L.gold_grade(hub_example("Write a haiku about rain."), "Rain falls.")


def _agreement(score_lists, sd, seed):
    """Two fresh labelers' pairwise agreement on the given gold scores at noise ``sd``."""
    rng = np.random.default_rng(seed)
    agree = total = 0
    for scores in score_lists:
        s = np.asarray(scores)
        a, b = s + sd * rng.standard_normal(len(s)), s + sd * rng.standard_normal(len(s))
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                total += 1
                agree += (a[i] > a[j]) == (b[i] > b[j])
    return agree / total


def test_noise_calibration_hits_the_target_at_any_scale():
    rng = np.random.default_rng(1)
    # Prompts of different difficulty: answers spread more on some than on others.
    score_lists = [list(rng.normal(rng.normal(), rng.uniform(0.3, 2.0), size=4)) for _ in range(600)]
    sd = L.calibrate_noise_to_scores(score_lists)
    assert sd > 0
    fresh = np.mean([_agreement(score_lists, sd, seed) for seed in range(10, 16)])
    assert fresh == pytest.approx(L.PAPER_AGREEMENT, abs=0.015)
    assert _agreement(score_lists * 3, 2 * sd, 99) < fresh - 0.03  # more noise, less agreement
    assert L.calibrate_noise_to_scores(score_lists, target=0.85) < sd
    scaled = L.calibrate_noise_to_scores([[10 * s for s in scores] for scores in score_lists])
    assert scaled == pytest.approx(10 * sd, rel=0.05)
    with pytest.raises(ValueError):
        L.calibrate_noise_to_scores([[1.0, 1.0]])


def test_a_team_on_hub_examples_agrees_about_as_often_as_the_papers_labelers(gold):
    rng = random.Random(0)
    examples = [hub_example(prompt) for prompt in dict.fromkeys(_world_texts(200))]
    responses = [_answers(rng, 4) for _ in examples]
    # What the comparisons stage does: gold scores of everything to rank (one batched pass),
    # the noise fitted to them, a team with that noise.
    flat = L.gold_scores([e for e, r in zip(examples, responses) for _ in r], sum(responses, []))
    score_lists = [flat[4 * i:4 * i + 4] for i in range(len(examples))]
    sd = L.calibrate_noise_to_scores(score_lists)
    team = L.labeler_team(4, seed=0, noise=sd)
    ranking = team[0].rank(examples[0], responses[0])
    assert sorted(ranking.ranks) == [1, 2, 3, 4] and ranking.responses == responses[0]
    assert L.team_agreement(team, examples, responses) == pytest.approx(L.PAPER_AGREEMENT, abs=0.04)
    # The gold ranking agrees with a noisy labeler more than two noisy labelers do.
    gold_rankings = [L.gold_labeler_ranking(e, r) for e, r in zip(examples, responses)]
    first_labeler = [team[0].rank(e, r) for e, r in zip(examples, responses)]
    assert L.pairwise_agreement(gold_rankings, first_labeler) > 0.78
