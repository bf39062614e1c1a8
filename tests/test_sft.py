"""SFT: the masked loss by hand and as TRL computes it, examples from conversations, a run that
teaches the answer format."""

import math

import pytest
import torch

from helpers import evaluation, generation, sft, world
from helpers.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(world.pretraining_corpus(n_docs=300) + [d.response for d in world.demonstrations(n=300)], 500)


def test_masked_sft_loss_by_hand():
    # one sequence of 4 tokens, vocabulary 3; the assistant answer is tokens 2 and 3
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]]))
    input_ids = torch.tensor([[0, 1, 1, 2]])
    attention = torch.tensor([[1, 1, 1, 1]])
    assistant = torch.tensor([[0, 0, 1, 1]])
    # targets counted: token 2 (=1) predicted at position 1 (p=0.6), token 3 (=2) at position 2 (p=0.8)
    expected = -(math.log(0.6) + math.log(0.8)) / 2
    assert sft.masked_sft_loss(logits, input_ids, attention, assistant).item() == pytest.approx(expected, rel=1e-6)
    # padding on the left changes nothing
    padded = sft.masked_sft_loss(torch.cat([torch.zeros(1, 2, 3), logits], 1),
                                 torch.tensor([[1, 1, 0, 1, 1, 2]]), torch.tensor([[0, 0, 1, 1, 1, 1]]),
                                 torch.tensor([[0, 0, 0, 0, 1, 1]]))
    assert padded.item() == pytest.approx(expected, rel=1e-6)


def test_example_masks_only_the_answer_and_its_eos(tok):
    example = sft.build_sft_example(tok, "What is 2 plus 3?", "5")
    ids, mask = example["input_ids"], example["assistant_mask"]
    learned = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(learned) == " 5<|endoftext|>"
    assert ids[-1] == tok.eos_token_id and mask[-1] == 1
    assert tok.decode([i for i, m in zip(ids, mask) if not m]) == "<|user|> What is 2 plus 3?<|assistant|>"


def test_our_loss_equals_what_trl_trains_on(tok):
    """TRL's SFTTrainer with assistant_only_loss computes exactly masked_sft_loss."""
    from trl import SFTConfig, SFTTrainer

    from helpers.models import build_causal_lm

    torch.manual_seed(0)
    model = build_causal_lm(tok, "tiny")
    demos = world.demonstrations(n=6)
    config = SFTConfig(output_dir="/tmp/sft-test", assistant_only_loss=True, per_device_train_batch_size=6,
                       report_to=[], use_cpu=True, max_length=128, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=sft._as_dataset(demos), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    trl_loss = trainer.compute_loss(model, batch).item()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assistant = (batch["labels"] != -100).long()
    # labels are the inputs with -100 off the assistant tokens; our mask marks the same tokens
    ours = sft.masked_sft_loss(logits, batch["input_ids"], batch["attention_mask"], assistant).item()
    assert ours == pytest.approx(trl_loss, rel=1e-4)


def test_short_sft_run_teaches_the_answer_format(course_artifacts):
    from helpers.pipeline import load_or_train

    base = load_or_train("base")  # the fast-mode base of this test session
    prompts = world.prompts("eval")[::8]
    texts, details = generation.generate(base.model, base.tokenizer, [evaluation.base_prompt(e.prompt) for e in prompts],
                                         chat=False, temperature=0.0, max_new_tokens=32, return_details=True)
    before = evaluation.instruction_following_rate(prompts, texts, details["ended_with_eos"].tolist())

    from helpers.models import load_causal_lm
    model = load_causal_lm(base.path)
    settings = sft.SFTSettings(epochs=5, n_demonstrations=500, batch_size=16, learning_rate=3e-3,
                               eval_prompts_per_epoch=4)
    history = sft.train_sft(model, base.tokenizer, world.demonstrations(), settings, progress=False)
    texts, details = generation.generate(model, base.tokenizer, [e.prompt for e in prompts], temperature=0.0,
                                         max_new_tokens=32, return_details=True)
    after = evaluation.instruction_following_rate(prompts, texts, details["ended_with_eos"].tolist())
    assert history.train_loss[-1] < history.train_loss[0]
    assert after >= before + 0.3, (before, after, texts[:5])
