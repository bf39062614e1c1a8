"""What PPO reads off a model on a rollout: the log-probabilities of the sampled tokens, the
values of every prefix, and the reward model's score, from a padded batch or a packed one.

A rollout is a batch of rows ``[left-padded prompt | right-padded response]`` (see
``helpers.ppo``); every function here returns one number per response token, shape
``(batch, R)``, or one per response.

Packing is for speed only. A padded batch is as wide as its longest prompt plus its longest
response, and responses vary in length, so much of what a padded forward and backward pass
computes is padding. Packed, the sequences lie end to end, several to a row, and the models
compute little besides real tokens; the numbers are those of the padded batch up to float
rounding (a test holds them equal). ``PPOConfig.pack_sequences`` switches it off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from helpers.models import position_ids_from_mask, token_values
from helpers.reward import pooled_scores

# --------------------------------------------------------------------------------------------
# On the padded batch
# --------------------------------------------------------------------------------------------


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                      temperature: float = 1.0, with_entropy: bool = False):
    """Log-probability of each response token under ``model`` at ``temperature``: (batch, R).

    ``input_ids`` is ``[prompt | response]`` with the response starting at column
    ``prompt_length``. The logits at column t predict the token at t + 1, so the response's R
    tokens are predicted by columns prompt_length - 1 ... prompt_length + R - 2.

    The logits are divided by the sampling temperature: the tokens were drawn from
    softmax(logits / T), so that is the distribution whose probabilities PPO's ratio compares.
    Using plain logits here would make the ratio differ from 1 before any update.

    With ``with_entropy=True`` also returns the entropy of the whole next-token distribution at
    every response position (batch, R).
    """
    response_ids = input_ids[:, prompt_length:]
    # Only the last R + 1 columns need the language-model head (a vocabulary-wide matmul).
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                logits_to_keep=response_ids.size(1) + 1, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    all_logprobs = F.log_softmax(logits, dim=-1)
    logprobs = all_logprobs.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logprobs
    entropy = -(all_logprobs.exp() * all_logprobs).sum(-1)
    return logprobs, entropy


def response_values(value_model, input_ids, attention_mask, prompt_length: int) -> torch.Tensor:
    """V(state before each response token): (batch, R).

    The state before response token t is everything up to token t - 1, whose last position is
    column prompt_length + t - 1: the same columns whose logits predict the response tokens.
    """
    values = token_values(value_model, input_ids, attention_mask)
    return values[:, prompt_length - 1:-1]


def sequence_scores(reward_model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The reward model's score of each row: (batch,). Read at the last real token, or averaged
    over the answer's tokens if the RM was trained that way (``helpers.reward.POOLINGS``).

    We score the exact tokens that were sampled (decoding to text and re-tokenizing could
    change them) and find the last real token from the attention mask (not from the pad id: a
    policy can sample the pad token itself). ``config.reward_offset`` shifts the scores so the
    demonstrations average 0 (the RM stage sets it), as ``helpers.reward.score`` does.
    """
    offset = float(getattr(reward_model.config, "reward_offset", 0.0) or 0.0)
    return pooled_scores(reward_model, input_ids, attention_mask).float() - offset


# --------------------------------------------------------------------------------------------
# On a packed batch: the same numbers without the padding
# --------------------------------------------------------------------------------------------


@dataclass
class PackedBatch:
    """The sequences of a padded batch laid end to end, several to a row (``pack_sequences``)."""

    input_ids: torch.Tensor  # (rows, width) sequence after sequence, pad tokens at the end of a row
    position_ids: torch.Tensor  # (rows, width) 0, 1, 2, ... restarting with every sequence
    source: torch.Tensor  # (n,) flat position (row * width + column) of the output predicting each
    #                       real response token of the batch
    target: tuple  # (batch row, response column) of each of those n tokens in the (B, R) layout
    tokens: torch.Tensor  # (n,) the response tokens themselves
    shape: tuple  # (B, R), the layout of the rollout's per-token tensors


def pack_sequences(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> PackedBatch:
    """Pack the real tokens of a ``[prompt | response]`` batch into fewer, fuller rows.

    Why: see the module docstring (``benchmarks/ppo_speed.py`` measures what it saves).

    Each row holds whole sequences one after another (first-fit, longest first, into rows twice
    as wide as the longest sequence); the position ids restart at 0 with every sequence. Given
    position ids and no attention mask, transformers' attention lets a token see only the
    earlier tokens of its own sequence (it reads the sequence boundaries from the position ids:
    a packed batch). Every token thus gets the output it would get in the padded batch, up to
    float rounding (``test_packed_sequences_give_the_losses_and_gradients_of_a_padded_batch``).
    """
    batch, total_width = attention_mask.shape
    lengths = attention_mask.sum(1).tolist()
    width = 2 * max(lengths)
    row_of, start_of, room = {}, {}, []  # room: free columns left in each packed row
    for i in sorted(range(batch), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            row = len(room)
            room.append(width)
        row_of[i], start_of[i] = row, width - room[row]
        room[row] -= lengths[i]

    device = input_ids.device
    ids = torch.zeros((len(room), width), dtype=input_ids.dtype, device=device)  # unused columns: any token
    positions = torch.zeros_like(ids)
    source, rows, columns = [], [], []
    for i in range(batch):
        real_columns = attention_mask[i].nonzero().squeeze(1)
        n, row, start = len(real_columns), row_of[i], start_of[i]
        ids[row, start:start + n] = input_ids[i, real_columns]
        positions[row, start:start + n] = torch.arange(n, device=device)
        # The k-th real token of the sequence is predicted by the output at packed column
        # start + k - 1; the response's tokens are those in columns >= prompt_length.
        k = torch.arange(n, device=device)
        response = real_columns >= prompt_length
        source.append(row * width + start + k[response] - 1)
        rows.append(torch.full_like(k[response], i))
        columns.append(real_columns[response] - prompt_length)
    rows, columns = torch.cat(rows), torch.cat(columns)
    return PackedBatch(input_ids=ids, position_ids=positions, source=torch.cat(source), target=(rows, columns),
                       tokens=input_ids[rows, columns + prompt_length],
                       shape=(batch, total_width - prompt_length))


def _packed_hidden(model, packed: PackedBatch) -> torch.Tensor:
    """The transformer's last hidden state at every packed source position: (n, width)."""
    # No attention mask: transformers then finds the packed sequences from the position ids.
    hidden = model.base_model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                              use_cache=False).last_hidden_state
    return hidden.flatten(0, 1)[packed.source]


def _unpack(values: torch.Tensor, packed: PackedBatch) -> torch.Tensor:
    """(n,) numbers of the real response tokens -> (B, R), 0 on padding."""
    return values.new_zeros(packed.shape).index_put(packed.target, values)


def packed_response_logprobs(model, packed: PackedBatch, temperature: float = 1.0, with_entropy: bool = False):
    """``response_logprobs`` on a packed batch: the same (B, R) numbers, 0 on padding."""
    logits = model.get_output_embeddings()(_packed_hidden(model, packed)).float() / temperature
    all_logprobs = F.log_softmax(logits, dim=-1)
    logprobs = _unpack(all_logprobs.gather(-1, packed.tokens[:, None]).squeeze(-1), packed)
    if not with_entropy:
        return logprobs
    return logprobs, _unpack(-(all_logprobs.exp() * all_logprobs).sum(-1), packed)


def packed_response_values(value_model, packed: PackedBatch) -> torch.Tensor:
    """``response_values`` on a packed batch: the same (B, R) numbers, 0 on padding."""
    return _unpack(value_model.score(_packed_hidden(value_model, packed)).squeeze(-1).float(), packed)
