"""Self-checks: every reference passes, every known bug is named, bad student code never escapes."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from helpers import exercises as ex
from helpers.generation import sample_next_token
from helpers.pretrain import next_token_loss

ALL_BUGS = [(name, bug) for name, exercise in ex.EXERCISES.items() for bug in exercise.bugs]


# --- generic: covers every exercise registered now or later -------------------------------------


@pytest.mark.parametrize("name", sorted(ex.EXERCISES))
def test_reference_passes_its_own_checks(name, capsys):
    reference = ex.get_exercise(name).reference_fn()
    returned = ex.check(name, reference)
    assert returned is reference
    assert f"✔ {name}: all {len(ex.get_exercise(name).cases)} checks passed" in capsys.readouterr().out


@pytest.mark.parametrize("name,bug", ALL_BUGS, ids=[f"{n}-{b.variant.__name__}" for n, b in ALL_BUGS])
def test_each_known_bug_fails_with_its_own_hint(name, bug):
    result = ex.run_checks(name, bug.variant)
    assert result.status == "failed"
    assert result.bug is bug, f"recognised as: {result.hint!r}"
    assert result.hint == bug.hint


@pytest.mark.parametrize("name", sorted(ex.EXERCISES))
def test_metadata_and_solution_source(name):
    header = ex.exercise_header(name)
    assert header.startswith("Difficulty: ") and "Importance: " in header and "minutes" in header
    source = ex.solution_source(name)
    assert "def " in source and "return" in source
    assert ex.get_exercise(name).hints, "every exercise has at least one hint"


# --- the two stage-1 exercises: hint texts a student will read ----------------------------------


@pytest.mark.parametrize("variant,expected", [
    (ex._ntl_no_shift, "compare logits[:, :-1] with input_ids[:, 1:]"),
    (ex._ntl_padding_in_mean, "padding positions change your loss: apply the mask"),
    (ex._ntl_sum, "you return the sum"),
    (ex._ntl_mask_wrong_side, "attention_mask[:, 1:], not attention_mask[:, :-1]"),
    (ex._ntl_shift_backwards, "you shifted the wrong way"),
    (ex._ntl_mean_of_sequence_means, "you average each sequence first"),
])
def test_next_token_loss_bug_hints(variant, expected, capsys):
    returned = ex.check("next_token_loss", variant)
    out = capsys.readouterr().out
    assert returned is next_token_loss
    assert "✘ next_token_loss" in out and expected in out


@pytest.mark.parametrize("variant,expected", [
    (ex._sample_times_t, "don't multiply"),
    (ex._sample_without_softmax, "apply torch.softmax"),
    (ex._sample_argmax, "you always return the most likely token"),
    (ex._sample_ignoring_t, "don't depend on the temperature"),
    (ex._sample_dividing_by_zero, "temperature 0 means greedy"),
])
def test_sampling_bug_hints(variant, expected):
    result = ex.run_checks("sample_with_temperature", variant)
    assert not result.ok and expected in result.hint


def test_hand_written_buggy_loss_is_recognised():
    # written the way a student would, not copied from the variants
    def my_loss(logits, input_ids, attention_mask):
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        picked = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        return -picked.mean()  # forgot the mask

    result = ex.run_checks("next_token_loss", my_loss)
    assert result.passed >= 1  # the batch without padding is right
    assert "apply the mask" in result.hint


def test_other_correct_implementations_pass():
    def gather_loss(logits, ids, mask):
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        m = mask[:, 1:].float()
        return -(logp * m).sum() / m.sum()

    def categorical_sampler(logits, temperature, generator=None):
        if temperature == 0:
            return logits.argmax(-1)
        return torch.distributions.Categorical(logits=logits / temperature).sample()

    assert ex.run_checks("next_token_loss", gather_loss).ok
    assert ex.run_checks("sample_with_temperature", categorical_sampler).ok


# --- what students actually hand in -------------------------------------------------------------


def test_stub_is_not_attempted(capsys):
    def next_token_loss_stub(logits, input_ids, attention_mask):
        # YOUR CODE HERE
        raise NotImplementedError

    returned = ex.check("next_token_loss", next_token_loss_stub)
    out = capsys.readouterr().out
    assert returned is next_token_loss
    assert "not attempted yet (using the reference so the notebook can go on)" in out
    assert "Error" not in out and "Traceback" not in out


def _assert_clear_failure(name, fn, capsys, *fragments):
    returned = ex.check(name, fn)  # must not raise
    out = capsys.readouterr().out
    assert returned is ex.get_exercise(name).reference_fn()
    assert f"✘ {name}" in out and "Traceback" not in out
    for fragment in fragments:
        assert fragment in out, out
    return out


def test_returning_none(capsys):
    def loss(logits, input_ids, attention_mask):
        value = next_token_loss(logits, input_ids, attention_mask)  # noqa: F841 - no return

    _assert_clear_failure("next_token_loss", loss, capsys, "returned None: did you forget `return`?")


def test_wrong_shape(capsys):
    def unreduced(logits, input_ids, attention_mask):
        return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none")

    _assert_clear_failure("next_token_loss", unreduced, capsys,
                          "expected shape () (a single number), got (1, 5)")

    def keepdim(logits, temperature, generator=None):
        return sample_next_token(logits, temperature, generator).unsqueeze(-1)

    _assert_clear_failure("sample_with_temperature", keepdim, capsys, "expected shape (4,), got (4, 1)")


def test_wrong_dtype(capsys):
    def float_ids(logits, temperature, generator=None):
        return sample_next_token(logits, temperature, generator).float()

    _assert_clear_failure("sample_with_temperature", float_ids, capsys,
                          "expected an integer tensor (like torch.int64), got torch.float32")


def test_nan_and_inf(capsys):
    def nan_loss(logits, input_ids, attention_mask):
        return next_token_loss(logits, input_ids, attention_mask) * float("nan")

    def inf_loss(logits, input_ids, attention_mask):
        return next_token_loss(logits, input_ids, attention_mask) / 0.0

    _assert_clear_failure("next_token_loss", nan_loss, capsys, "contains NaN")
    _assert_clear_failure("next_token_loss", inf_loss, capsys, "contains inf")


def test_exception_reports_type_message_and_student_line(capsys):
    def loss(logits, input_ids, attention_mask):
        flat = logits.reshape(-1)
        raise ValueError(f"cannot handle {flat.numel()} numbers")

    out = _assert_clear_failure("next_token_loss", loss, capsys, "raised ValueError: cannot handle",
                                'raise ValueError(f"cannot handle {flat.numel()} numbers")', "Hint:")
    assert "line " in out


def test_torch_error_inside_student_code(capsys):
    def loss(logits, input_ids, attention_mask):
        return torch.nn.functional.cross_entropy(logits, input_ids)  # 3-D logits: wrong layout

    _assert_clear_failure("next_token_loss", loss, capsys, "your function raised", "cross_entropy(logits, input_ids)")


def test_detached_output_and_python_float(capsys):
    def detached(logits, input_ids, attention_mask):
        return next_token_loss(logits, input_ids, attention_mask).detach()

    def as_float(logits, input_ids, attention_mask):
        return next_token_loss(logits, input_ids, attention_mask).item()

    _assert_clear_failure("next_token_loss", detached, capsys, "carries no gradient")
    _assert_clear_failure("next_token_loss", as_float, capsys, "expected a torch.Tensor, got float")


def test_in_place_edit_of_an_input(capsys):
    def sampler(logits, temperature, generator=None):
        if temperature == 0:
            return logits.argmax(-1)
        logits /= temperature
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)

    _assert_clear_failure("sample_with_temperature", sampler, capsys, "changed its input `logits` in place")


def test_not_a_function(capsys):
    _assert_clear_failure("next_token_loss", None, capsys, "expected a function")


def test_check_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ex.check("sample_with_temperature", sample_next_token)
    assert torch.equal(torch.rand(3), expected)


# --- hints, solutions, headers, registry --------------------------------------------------------


def test_hints_are_progressive(capsys):
    ex._hints_shown.pop("next_token_loss", None)
    n = len(ex.get_exercise("next_token_loss").hints)
    ex.hint("next_token_loss")
    first = capsys.readouterr().out
    assert "Hint 1/" in first and "Hint 2/" not in first
    ex.hint("next_token_loss")
    assert "Hint 2/" in capsys.readouterr().out
    ex.hint("next_token_loss", all=True)
    assert f"Hint {n}/{n}" in capsys.readouterr().out


def test_show_solution_prints_the_production_code(capsys):
    import inspect

    ex.show_solution("next_token_loss")
    out = capsys.readouterr().out
    assert inspect.getsource(next_token_loss) in out


def test_header_text():
    header = ex.exercise_header("next_token_loss")
    assert header == "Difficulty: ●●○  Importance: ●●●  About 10 minutes"
    assert repr(header) == str(header)  # shows without quotes as a cell's last value


def test_html_rendering_for_jupyter():
    result = ex.run_checks("next_token_loss", ex._ntl_sum)
    html = result._repr_html_()
    assert "<div" in html and "next_token_loss" in html and "Hint:" in html


def test_register_a_new_exercise_in_a_few_lines():
    def double(x):
        return 2 * x

    def add_one(x):
        return x + 1

    exercise = ex.Exercise(
        name="_test_double", reference=f"{__name__}:_reference_double",
        cases=[ex.Case("a vector", lambda: {"x": torch.arange(4.0)})],
        bugs=[ex.KnownBug("multiply, don't add", add_one)], hints=["times two"], difficulty=1, importance=1,
        minutes=2)
    ex.register(exercise)
    try:
        assert ex.run_checks("_test_double", double).ok
        assert ex.run_checks("_test_double", add_one).hint == "multiply, don't add"
        assert ex.run_checks("_test_double", lambda x: x * 3).bug is None
    finally:
        del ex.EXERCISES["_test_double"]


def _reference_double(x):
    return x * 2


def test_unknown_name_lists_the_exercises():
    with pytest.raises(KeyError, match="next_token_loss"):
        ex.check("no_such_exercise", lambda: None)
