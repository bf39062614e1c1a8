"""The course tokenizer: exact round trips, distinct pad and EOS, the chat template's masks."""

import copy
import random

import pytest

from helpers import world
from helpers.tokenizer import (ASSISTANT, CHAT_TEMPLATE, EOS, PAD, USER, load_tokenizer, render_chat,
                               train_tokenizer)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(world.pretraining_corpus(n_docs=600), vocab_size=512)


def test_special_tokens_are_single_distinct_ids(tok):
    ids = [tok.convert_tokens_to_ids(t) for t in (EOS, PAD, USER, ASSISTANT)]
    assert len(set(ids)) == 4
    assert tok.pad_token_id != tok.eos_token_id  # else masking padding would mask the stop token
    assert tok.eos_token == EOS and tok.pad_token == PAD
    for t in (EOS, PAD, USER, ASSISTANT):
        assert len(tok(f"a{t}b", add_special_tokens=False)["input_ids"]) == 3
    assert tok.padding_side == "left"
    assert tok.model_max_length == 256


def test_vocabulary_bounded(tok):
    assert 256 + 4 <= len(tok) <= 512


@pytest.mark.parametrize("text", [
    "",
    " leading and trailing spaces  ",
    "What is 3 plus 4?\n\nAnswer: 7.",
    "tabs\tand\r\nwindows newlines",
    "Ünïcödé, 中文, العربية, emoji 🙂👍🏽, combining e\u0301",
    "zero\u200bwidth and nbsp\u00a0here",
    f"{USER}Hi{ASSISTANT}Hello{EOS}",
])
def test_round_trip(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_round_trip_random_unicode(tok):
    rng = random.Random(0)
    for _ in range(50):
        text = "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(160, 0x2FFF),
                                       rng.randint(0x1F300, 0x1F6FF)]))
                       for _ in range(rng.randint(1, 40)))
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_renders_the_course_format(tok):
    chat = [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": "7"}]
    assert tok.apply_chat_template(chat, tokenize=False) == "<|user|> What is 3 plus 4?<|assistant|> 7<|endoftext|>"
    assert tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True) == \
        "<|user|> What is 3 plus 4?<|assistant|>"
    assert render_chat("What is 3 plus 4?") == "<|user|> What is 3 plus 4?<|assistant|>"
    assert render_chat("What is 3 plus 4?", "7") == "<|user|> What is 3 plus 4?<|assistant|> 7<|endoftext|>"
    assert render_chat("Hi", tokenizer=tok) == render_chat("Hi")
    assert render_chat("Hi", "Hello", tokenizer=tok) == render_chat("Hi", "Hello")


def test_assistant_mask_covers_exactly_the_replies_and_their_eos(tok):
    chat = [{"role": "user", "content": "Reverse: red old cat"},
            {"role": "assistant", "content": "cat old red"},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You're welcome."}]
    enc = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]  # the key name in transformers 5.x
    assert len(ids) == len(mask)
    # Rebuild the expected mask from the pieces: each part is tokenized on its own (no merge
    # crosses a special token), user parts 0, reply + EOS 1.
    expected_ids, expected_mask = [], []
    for turn in chat:
        if turn["role"] == "user":
            part = tok(USER + " " + turn["content"] + ASSISTANT, add_special_tokens=False)["input_ids"]
            expected_ids += part
            expected_mask += [0] * len(part)
        else:
            part = tok(" " + turn["content"] + EOS, add_special_tokens=False)["input_ids"]
            expected_ids += part
            expected_mask += [1] * len(part)
    # (the ASSISTANT marker was put with the user part above, and must be 0)
    assert ids == expected_ids
    assert mask == expected_mask
    eos_positions = [i for i, t in enumerate(ids) if t == tok.eos_token_id]
    assert all(mask[i] == 1 for i in eos_positions)
    assistant_marker = tok.convert_tokens_to_ids(ASSISTANT)
    assert all(mask[i] == 0 for i, t in enumerate(ids) if t == assistant_marker)


def test_first_word_of_an_answer_is_the_running_text_token(tok):
    """The space after the markers: an answer's first word (and a prompt's) is the token the
    word has in the middle of a sentence, the one the base model learned, not a start-of-text
    variant."""
    def tokens_of(text):
        return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])

    in_text = tokens_of("The review was positive. Positive reviews")
    rendered = tokens_of(render_chat("Is it good?", "Positive."))
    answer = rendered[rendered.index(ASSISTANT) + 1]
    assert answer == in_text[in_text.index(".") + 1] == tok.convert_ids_to_tokens(
        tok(" Positive", add_special_tokens=False)["input_ids"])[0]
    assert rendered[1] == tokens_of(" Is")[0]
    assert tokens_of("Positive")[0] != answer  # without the space it would be another token


def test_loading_replaces_an_older_saved_chat_format(tok, tmp_path):
    older = copy.deepcopy(tok)
    older.chat_template = CHAT_TEMPLATE.replace("<|assistant|>{% generation %} ", "<|assistant|>{% generation %}")
    older.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).chat_template == CHAT_TEMPLATE


def test_save_and_load_keep_everything(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.chat_template == CHAT_TEMPLATE
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert loaded.padding_side == "left"
    text = "Sara ate a pear. 🙂"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    batch = loaded(["a", "a longer text here"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id  # left padding
    assert batch["attention_mask"][0][0] == 0


def _gpt2_style_tokenizer():
    """A byte-level BPE with the post-processor of GPT-2 and SmolLM2 (offsets trimmed of spaces)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=True)
    backend.train_from_iterator(world.pretraining_corpus(seed=0, n_docs=200), trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def test_a_hub_tokenizer_marks_the_answer_for_sft(tmp_path):
    from helpers.tokenizer import add_course_tokens, messages

    tok = _gpt2_style_tokenizer()
    ids_before = tok("Sure, here it is.")["input_ids"]
    add_course_tokens(tok)
    tok.save_pretrained(tmp_path)
    for t in (tok, load_tokenizer(tmp_path)):  # and it survives saving
        text = t.apply_chat_template(messages("What is 2 plus 2?", "4"), tokenize=False)
        start = text.index(ASSISTANT) + len(ASSISTANT)  # where the {% generation %} block starts: " 4"
        encoded = t(text, add_special_tokens=False)
        assert encoded.char_to_token(start) is not None  # the answer's leading space belongs to a token
        out = t.apply_chat_template(messages("What is 2 plus 2?", "4"), tokenize=True, return_dict=True,
                                    return_assistant_tokens_mask=True)
        answer = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
        assert t.decode(answer) == " 4" + t.eos_token
    assert tok("Sure, here it is.")["input_ids"] == ids_before  # offsets only: the same token ids
