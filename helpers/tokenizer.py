"""The course's tokenizer: byte-level BPE trained on the Instruction World's web text.

Byte-level BPE (the GPT-2 recipe) starts from the 256 possible bytes, so any string, in any
script, can be encoded and decoded back exactly: there is no "unknown" token. Training then
merges the most frequent neighbouring pairs until the vocabulary has ``vocab_size`` entries.

The trained tokenizer is wrapped as a ``transformers.PreTrainedTokenizerFast``, so it is used
exactly like a hub tokenizer (``tok(text)``, ``tok.decode``, ``save_pretrained``,
``apply_chat_template``): the tiny profile exercises the same code as the gpu profile.

Special tokens (each one token, never split or merged):

* ``<|endoftext|>`` (EOS): ends a document in pretraining and a reply in a chat;
* ``<|pad|>``: fills the short rows of a batch. It must differ from EOS: losses and the PPO
  rollout mask padding out, and if padding were EOS the model's own stop token would be masked
  too, so it would never learn to stop;
* ``<|user|>`` and ``<|assistant|>``: mark who speaks in a chat.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
SPECIAL_TOKENS = (EOS, PAD, USER, ASSISTANT)

#: A chat turn renders as "<|user|> {prompt}<|assistant|> {response}<|endoftext|>". The space
#: after each marker matters: a byte-level BPE gives a word a different token at the start of a
#: text ("Positive") than after a space ("ĠPositive"), and running text, where the base model
#: learned every word, almost always has the space. Without it, the first word of every answer
#: would be a token the base model hardly knows, and copying a word from the prompt into the
#: first place of the answer (reverse, sort, a name) would mean learning a second token for each
#: word. The ``{% generation %}`` block marks what the assistant wrote (the space, its reply and
#: the EOS that ends it): ``return_assistant_tokens_mask=True`` turns it into the mask TRL's
#: SFTTrainer uses for ``assistant_only_loss``. ``add_generation_prompt`` ends the text with
#: "<|assistant|>", the cue for the model to reply; the reply's text is what follows that space.
#: EOS comes from the tokenizer, so the same template also serves a hub tokenizer whose EOS is
#: another string.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "<|user|> {{ message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %} {{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{%- else -%}"
    "{{ raise_exception('The course chat format has only user and assistant turns, got role ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

#: Longest sequence the tiny models see (their ``n_positions``).
DEFAULT_MAX_LENGTH = 256


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048,
                    model_max_length: int = DEFAULT_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    A small vocabulary suits a small model: with at most 2,048 tokens the embedding table stays
    a modest share of a 1M-parameter model, while the words of the corpus become single tokens.
    The Instruction World uses few distinct words, so training stops before that cap, once every
    word of the corpus is one token: no pair is left to merge.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    bpe = Tokenizer(models.BPE())
    # Split on spaces and punctuation first (merges never cross a word boundary), then map each
    # byte to a printable character. add_prefix_space=False keeps decode(encode(x)) == x.
    # Every digit is its own token: a model that sees "47" as one symbol must memorize sums
    # like a table, while digit by digit it can learn how addition carries (as many LLM
    # tokenizers do, e.g. LLaMA's).
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    # Offsets that point at the original characters: the chat template's assistant mask is
    # built from them.
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    bpe.train_from_iterator(_batches(texts), trainer=trainer)
    return wrap_tokenizer(bpe, model_max_length)


def wrap_tokenizer(bpe, model_max_length: int = DEFAULT_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """A ``tokenizers.Tokenizer`` as a ``PreTrainedTokenizerFast`` with the course's settings."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS,
        bos_token=EOS,  # GPT-2 style: one token both starts and ends a document
        pad_token=PAD,
        extra_special_tokens=[USER, ASSISTANT],
        model_max_length=model_max_length,
        # Left padding: in a batch of prompts every row then ends at the last column, so the
        # next token of every row is sampled from the same position and appended as one new
        # column. With right padding the short rows would have to continue from the middle of
        # the batch. Generation and the PPO rollout both rely on this.
        padding_side="left",
        # Keep decoding byte-exact (no "clean up" of spaces before punctuation).
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def add_course_tokens(tok) -> int:
    """Give a hub tokenizer the course's pad, user and assistant tokens and chat template.

    Returns how many tokens were added (the model's embeddings must then be resized). The hub
    tokenizer keeps its own EOS; the chat template reads it from ``eos_token``.
    """
    added = tok.add_special_tokens({"extra_special_tokens": [USER, ASSISTANT]},
                                   replace_extra_special_tokens=False)
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        added += tok.add_special_tokens({"pad_token": PAD})
    tok.padding_side = "left"
    tok.chat_template = CHAT_TEMPLATE
    keep_leading_spaces_in_offsets(tok)
    return added


def keep_leading_spaces_in_offsets(tok) -> None:
    """Make a byte-level tokenizer's token offsets include a token's leading space.

    GPT-2-style tokenizers (SmolLM2's among them) trim that space from the offsets by default
    (``trim_offsets``). The course's chat template starts the assistant's part with a space, so
    with trimmed offsets no token starts where the ``{% generation %}`` block starts, and
    some transformers versions (Colab's 5.15 among them) then return an all-zero assistant mask: SFT
    would have no tokens to learn from. Offsets are only used to map characters to tokens; the token ids do not change.
    """
    backend = tok.backend_tokenizer
    spec = json.loads(backend.to_str())

    def untrim(processor: dict | None) -> bool:
        if not processor:
            return False
        if processor.get("type") == "Sequence":
            return any([untrim(p) for p in processor.get("processors", [])])
        if processor.get("type") == "ByteLevel" and processor.get("trim_offsets", False):
            processor["trim_offsets"] = False
            return True
        return False

    if untrim(spec.get("post_processor")):
        backend.post_processor = Tokenizer.from_str(json.dumps(spec)).post_processor


def messages(prompt: str, response: str | None = None) -> list[dict]:
    """One user turn, and the assistant's reply if given, as chat messages."""
    turns = [{"role": "user", "content": prompt}]
    if response is not None:
        turns.append({"role": "assistant", "content": response})
    return turns


def render_chat(prompt: str, response: str | None = None, tokenizer=None) -> str:
    """The text the model reads for one exchange.

    Without a response: the generation prompt "<|user|> {prompt}<|assistant|>". With one:
    "<|user|> {prompt}<|assistant|> {response}<|endoftext|>". Pass ``tokenizer`` to render through
    its chat template (identical for the course tokenizer; needed for a hub tokenizer's EOS).
    """
    if tokenizer is not None:
        return tokenizer.apply_chat_template(messages(prompt, response), tokenize=False,
                                             add_generation_prompt=response is None)
    if response is None:
        return f"{USER} {prompt}{ASSISTANT}"
    return f"{USER} {prompt}{ASSISTANT} {response}{EOS}"


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with ``save_pretrained`` (the course's or a hub model's)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.chat_template is not None and USER in tok.chat_template:
        tok.chat_template = CHAT_TEMPLATE  # the format is code: a saved copy may be older
    return tok
