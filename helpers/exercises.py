"""Self-check exercises: `check(name, fn)`, progressive hints and `show_solution(name)`.

In a notebook, an exercise is a stub the student fills in, then one line that checks it:

    def next_token_loss(logits, input_ids, attention_mask):
        # YOUR CODE HERE
        raise NotImplementedError

    next_token_loss = check("next_token_loss", next_token_loss)

`check` runs the student's function and the reference on a few targeted cases (the reference is
the production code the course's trainers use, e.g. `helpers.pretrain.next_token_loss`). It prints
a pass, or the first failing case with a hint that names the bug, and returns the student's
function when it passes, else the reference, so the rest of the notebook works either way.

How a hint is chosen: each exercise lists known bugs as small buggy variants of the reference
("forgot to shift", "padding in the mean", ...). When the student's function fails, its outputs are
compared with each variant's outputs on the same inputs; the variant it agrees with best names the
bug. That is more specific than a generic "wrong value", and a test checks every variant is caught.

Adding an exercise: at the bottom of this file, in its stage's section, write input builders and
buggy variants, then register it. For example:

    def _reward_loss_wrong_sign(chosen, rejected):
        return -F.logsigmoid(rejected - chosen).mean()

    register(Exercise(
        name="pairwise_reward_loss", reference="helpers.reward:pairwise_loss",
        difficulty=1, importance=3, minutes=10,
        cases=[Case("4 pairs", lambda: {"chosen": torch.tensor([1.0, 0.2, -1.0, 3.0]).requires_grad_(),
                                        "rejected": torch.tensor([0.0, 0.5, -2.0, 3.0])})],
        bugs=[KnownBug("the loss must fall when chosen outscores rejected: logsigmoid(chosen - rejected)",
                       _reward_loss_wrong_sign)],
        hints=["The Bradley-Terry model: P(chosen preferred) = sigmoid(r_chosen - r_rejected)."],
    ))

`tests/test_exercises.py` then checks that the reference passes and that each variant fails with
its own hint; if two variants give the same outputs on every case, add a case that separates them.
"""

from __future__ import annotations

import html
import importlib
import inspect
import math
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# The registry: what an exercise is made of
# ---------------------------------------------------------------------------------------------


def _identity(output: Any, inputs: dict) -> Any:
    return output


@dataclass
class Close:
    """Compares two outputs (tensors, numbers, or tuples/lists/dicts of them) with a tolerance.

    Calling it returns None when they agree and a short description of the difference otherwise.
    """

    rtol: float = 1e-4
    atol: float = 1e-5

    def __call__(self, got: Any, expected: Any) -> str | None:
        return _difference(got, expected, self.rtol, self.atol)


def exact() -> Close:
    """Outputs must be equal (token ids, counts, masks)."""
    return Close(rtol=0.0, atol=0.0)


@dataclass
class Case:
    """One targeted input and how to judge the output on it.

    make_inputs: builds fresh, deterministic inputs; called again for every function run (so a
        function that edits its inputs in place cannot spoil the next run). The values are passed
        positionally, in order, so the student's parameter names do not matter.
    summarize: turns the raw output into what is compared (e.g. token frequencies over many draws
        for a sampler); the raw output is still checked for None, type, shape, dtype and NaN.
    compare: `compare(got, expected)` -> None when they agree, else a description.
    seed: the global torch seed set (inside a forked RNG) around each call, so a function that uses
        the global generator gives the same answer every time and the notebook's RNG is untouched.
    """

    description: str
    make_inputs: Callable[[], dict[str, Any]]
    summarize: Callable[[Any, dict], Any] = _identity
    compare: Callable[[Any, Any], str | None] = field(default_factory=Close)
    seed: int = 0


@dataclass
class KnownBug:
    """A mistake students make, written as a function with that mistake, and what to tell them."""

    hint: str
    variant: Callable


@dataclass
class Exercise:
    name: str
    reference: str  # "module:function", imported only when needed
    cases: list[Case]
    bugs: list[KnownBug] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # shown one at a time by `hint(name)`
    difficulty: int = 2  # 1-3
    importance: int = 2  # 1-3
    minutes: int = 10

    def reference_fn(self) -> Callable:
        module_name, _, attribute = self.reference.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to the registry (a later registration with the same name replaces it)."""
    for score in (exercise.difficulty, exercise.importance):
        if score not in (1, 2, 3):
            raise ValueError(f"{exercise.name}: difficulty and importance are 1, 2 or 3")
    if not exercise.cases:
        raise ValueError(f"{exercise.name}: an exercise needs at least one case")
    EXERCISES[exercise.name] = exercise
    return exercise


def get_exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"no exercise called {name!r}; the exercises are: {known}")
    return EXERCISES[name]


# ---------------------------------------------------------------------------------------------
# Comparing outputs
# ---------------------------------------------------------------------------------------------


def _fmt_number(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else str(x)


def _fmt_values(x: Any) -> str:
    t = torch.as_tensor(x).detach().cpu()
    if t.dtype.is_floating_point:
        t = t.double().mul(1e4).round().div(1e4)  # 4 decimals are enough to see a difference
    return str(t.tolist())


def _fmt_shape(shape) -> str:
    shape = tuple(shape)
    if not shape:
        return "() (a single number)"
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _difference(got: Any, expected: Any, rtol: float, atol: float) -> str | None:
    if isinstance(expected, (tuple, list)):
        for i, (g, e) in enumerate(zip(got, expected)):
            diff = _difference(g, e, rtol, atol)
            if diff:
                return f"item {i}: {diff}"
        return None
    if isinstance(expected, dict):
        for key in expected:
            diff = _difference(got[key], expected[key], rtol, atol)
            if diff:
                return f"[{key!r}]: {diff}"
        return None
    if not isinstance(expected, (torch.Tensor, int, float, bool)):
        return None if got == expected else f"expected {expected!r}, got {got!r}"
    got_t = torch.as_tensor(got).detach().double().cpu()
    exp_t = torch.as_tensor(expected).detach().double().cpu()
    if got_t.shape != exp_t.shape:
        return f"expected shape {_fmt_shape(exp_t.shape)}, got {_fmt_shape(got_t.shape)}"
    if torch.allclose(got_t, exp_t, rtol=rtol, atol=atol, equal_nan=True):
        return None
    if exp_t.numel() == 1:
        return f"expected {_fmt_number(exp_t.item())}, got {_fmt_number(got_t.item())}"
    if exp_t.numel() <= 8:  # small enough to show whole
        return f"expected {_fmt_values(expected)}, got {_fmt_values(got)}"
    error = (got_t - exp_t).abs().nan_to_num(nan=math.inf)
    where = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
    return (f"largest difference {_fmt_number(error.max().item())} at index {list(where)}: "
            f"expected {_fmt_number(exp_t[where].item())}, got {_fmt_number(got_t[where].item())}")


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "boolean"
    if dtype.is_floating_point:
        return "floating-point"
    if dtype.is_complex:
        return "complex"
    return "integer"


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _output_problem(got: Any, expected: Any) -> str | None:
    """What is wrong with the *form* of an output (None, type, shape, dtype, NaN, gradients)."""
    if got is None and expected is not None:
        return "your function returned None: did you forget `return`?"
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected {len(expected)} outputs (a {type(expected).__name__}), got {type(got).__name__}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = _output_problem(g, e)
            if problem:
                return f"output {i}: {problem}"
        return None
    if not isinstance(expected, torch.Tensor):
        return None
    if not isinstance(got, torch.Tensor):
        why = " (did you call .item() or .tolist()? keep a tensor)" if isinstance(got, (int, float, list)) else ""
        return f"expected a torch.Tensor, got {type(got).__name__}{why}"
    if got.shape != expected.shape:
        return f"expected shape {_fmt_shape(expected.shape)}, got {_fmt_shape(got.shape)}"
    if _kind(got.dtype) != _kind(expected.dtype):
        return f"expected {_a(_kind(expected.dtype))} tensor (like {expected.dtype}), got {got.dtype}"
    if got.dtype.is_floating_point and torch.isfinite(expected).all():
        if torch.isnan(got).any():
            return "your output contains NaN (a 0/0, a log of 0, or a softmax over -inf only?)"
        if torch.isinf(got).any():
            return "your output contains inf (a division by zero or an exp that overflows?)"
    if expected.requires_grad and not got.requires_grad:
        return ("your output carries no gradient: it was detached from the computation "
                "(.item(), .detach(), .numpy() or torch.no_grad()), so training could not backpropagate")
    return None


def _mutated_input(fresh: dict[str, Any], after: dict[str, Any]) -> str | None:
    for key, value in fresh.items():
        if isinstance(value, torch.Tensor) and not torch.equal(value.detach(), after[key].detach()):
            return (f"your function changed its input `{key}` in place (e.g. `x /= t` or `x[...] = ...`); "
                    f"the caller still needs it: compute on a new tensor (`x = x / t`)")
    return None


# ---------------------------------------------------------------------------------------------
# Running a function on the cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one function did on one case."""

    summary: Any = None
    problem: str | None = None  # the output's form was wrong (None, shape, dtype, ...)
    error: BaseException | None = None  # the function raised


def _call(fn: Callable, case: Case) -> tuple[Any, dict, BaseException | None]:
    inputs = case.make_inputs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        try:
            return fn(*inputs.values()), inputs, None
        except Exception as error:  # the student's code may raise anything
            return None, inputs, error


def _run(fn: Callable, case: Case, reference_output: Any) -> Outcome:
    output, inputs, error = _call(fn, case)
    if error is not None:
        return Outcome(error=error)
    problem = _output_problem(output, reference_output) or _mutated_input(case.make_inputs(), inputs)
    if problem:
        return Outcome(problem=problem)
    try:
        return Outcome(summary=case.summarize(output, inputs))
    except Exception as error:
        return Outcome(problem=f"your output could not be used: {type(error).__name__}: {error}")


def _same_behaviour(a: Outcome, b: Outcome, case: Case) -> bool:
    """Did two functions do the same thing on a case (same exception, or outputs that agree)?"""
    if a.error is not None or b.error is not None:
        if a.error is None or b.error is None or type(a.error) is not type(b.error):
            return False
        return str(a.error).splitlines()[:1] == str(b.error).splitlines()[:1]
    if a.problem is not None or b.problem is not None:
        return a.problem == b.problem
    try:
        return case.compare(a.summary, b.summary) is None
    except Exception:
        return False


def _student_line(error: BaseException, fn: Callable) -> str:
    """'at line 7: loss = ...' for the deepest frame of the student's own code, if it can be found."""
    frames = traceback.extract_tb(error.__traceback__)
    filename = getattr(getattr(fn, "__code__", None), "co_filename", None)
    own = [f for f in frames if f.filename == filename] if filename else []
    if not own:  # not a plain function: take the deepest frame outside torch and this module
        own = [f for f in frames if "site-packages" not in f.filename and f.filename != __file__]
    if not own:
        return ""
    frame = own[-1]
    code = (frame.line or "").strip()
    return f"at line {frame.lineno}: {code}" if code else f"at line {frame.lineno}"


@dataclass
class CheckResult:
    name: str
    status: str  # "passed", "failed" or "not attempted"
    passed: int
    total: int
    failure: str = ""  # what went wrong on the first failing case
    hint: str = ""  # what to try
    bug: KnownBug | None = None  # the known bug that was recognised, if any

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    def text(self) -> str:
        if self.status == "passed":
            return f"✔ {self.name}: all {self.total} checks passed"
        if self.status == "not attempted":
            return f"○ {self.name}: not attempted yet (using the reference so the notebook can go on)"
        lines = [f"✘ {self.name}: {self.passed} of {self.total} checks passed", f"  {self.failure}"]
        if self.hint:
            lines.append(f"  Hint: {self.hint}")
        lines += ["  Using the reference for now so the notebook can go on; fix your function and run the cell again.",
                  f'  More help: hint("{self.name}"); the answer: show_solution("{self.name}").']
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"passed": "#1b7f3b", "not attempted": "#6b6b6b"}.get(self.status, "#b3261e")
        background = {"passed": "#eaf6ee", "not attempted": "#f2f2f2"}.get(self.status, "#fdecea")
        lines = [html.escape(line.strip()) for line in self.text().splitlines()]
        lines[0] = f"<b>{lines[0]}</b>"
        return (f'<div style="border-left: 4px solid {colour}; background: {background}; '
                f'padding: 6px 10px; font-family: sans-serif; line-height: 1.5">' + "<br>".join(lines) + "</div>")

    def __repr__(self) -> str:
        return self.text()


def run_checks(name: str, fn: Callable) -> CheckResult:
    """Run `fn` on every case of exercise `name`; returns the verdict without printing it."""
    # The cases are tiny tensors: one thread avoids thread start-up costs (and is much faster on a
    # busy machine). The caller's setting is restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_checks(name, fn)
    finally:
        torch.set_num_threads(threads)


def _run_checks(name: str, fn: Callable) -> CheckResult:
    exercise = get_exercise(name)
    reference = exercise.reference_fn()
    total = len(exercise.cases)
    if not callable(fn):
        return CheckResult(name, "failed", 0, total, f"expected a function, got {type(fn).__name__}",
                           "pass the function itself: check(name, my_function), without calling it")

    # The reference's raw outputs set the expected form (type, shape, dtype) of every output.
    reference_outputs = [_call(reference, case)[0] for case in exercise.cases]
    reference_outcomes = [_run(reference, c, out) for c, out in zip(exercise.cases, reference_outputs)]
    student_outcomes = [_run(fn, c, out) for c, out in zip(exercise.cases, reference_outputs)]

    first = student_outcomes[0]
    if isinstance(first.error, NotImplementedError):
        return CheckResult(name, "not attempted", 0, total)

    failing = [i for i, (s, r) in enumerate(zip(student_outcomes, reference_outcomes))
               if s.error is not None or s.problem is not None or exercise.cases[i].compare(s.summary, r.summary)]
    if not failing:
        return CheckResult(name, "passed", total, total)

    i = failing[0]
    case, outcome = exercise.cases[i], student_outcomes[i]
    if outcome.error is not None:
        what = f"{type(outcome.error).__name__}: {outcome.error}".strip()
        where = _student_line(outcome.error, fn)
        failure = f"On {case.description}, your function raised {what}" + (f"\n  ({where})" if where else "")
    else:
        what = outcome.problem or case.compare(outcome.summary, reference_outcomes[i].summary)
        failure = f"On {case.description}: {what}"

    bug = _recognise_bug(exercise, student_outcomes, reference_outputs, failing)
    if bug is not None:
        advice = bug.hint
    elif outcome.problem is not None and outcome.problem.startswith("your function returned None"):
        advice = "end your function with `return <the result>`"
    elif outcome.error is not None and any(w in str(outcome.error).lower() for w in ("size", "shape", "dimension")):
        advice = ("a shape mismatch: print the .shape of each tensor used on that line and compare it with what "
                  "the function you call expects")
    else:
        advice = exercise.hints[0] if exercise.hints else ""
    return CheckResult(name, "failed", total - len(failing), total, failure, advice, bug)


def _recognise_bug(exercise: Exercise, student: list[Outcome], reference_outputs: list[Any],
                   failing: list[int]) -> KnownBug | None:
    """The known bug whose variant behaves most like the student's function.

    A variant counts only if it agrees with the student on at least half of the cases the student
    fails (a bug can come with a second mistake); among those, the one that agrees on the most
    cases wins (ties: the first registered).
    """
    best, best_score = None, 0
    for bug in exercise.bugs:
        agrees = [_same_behaviour(mine, variant, case) for case, mine, variant
                  in zip(exercise.cases, student, _variant_outcomes(exercise, bug, reference_outputs))]
        if 2 * sum(agrees[i] for i in failing) >= len(failing) and sum(agrees) > best_score:
            best, best_score = bug, sum(agrees)
    return best


_variant_cache: dict[int, tuple[KnownBug, list[Outcome]]] = {}


def _variant_outcomes(exercise: Exercise, bug: KnownBug, reference_outputs: list[Any]) -> list[Outcome]:
    """A buggy variant's outcomes on every case (deterministic, so computed once per session)."""
    cached = _variant_cache.get(id(bug))
    if cached is None or cached[0] is not bug:
        outcomes = [_run(bug.variant, case, expected) for case, expected in zip(exercise.cases, reference_outputs)]
        cached = _variant_cache[id(bug)] = (bug, outcomes)
    return cached[1]


# ---------------------------------------------------------------------------------------------
# What the notebooks call
# ---------------------------------------------------------------------------------------------


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _show(obj: Any) -> None:
    """Rich display in Jupyter (one output with HTML and a plain-text fallback), print elsewhere."""
    if _in_notebook() and hasattr(obj, "_repr_html_"):
        from IPython.display import display

        display(obj)
    else:
        print(obj.text() if hasattr(obj, "text") else obj)


def check(name: str, fn: Callable) -> Callable:
    """Check a student's function; return it if it passes, else the reference."""
    result = run_checks(name, fn)
    _show(result)
    return fn if result.ok else get_exercise(name).reference_fn()


_hints_shown: dict[str, int] = {}


def hint(name: str, all: bool = False) -> None:  # noqa: A002 - `all=True` reads well in a notebook
    """Print the next hint for an exercise (each call reveals one more), or all of them."""
    hints = get_exercise(name).hints
    if not hints:
        print(f"{name}: no hints for this one; show_solution({name!r}) prints the answer.")
        return
    shown = len(hints) if all else min(_hints_shown.get(name, 0) + 1, len(hints))
    _hints_shown[name] = shown
    for i in range(shown):
        print(f"Hint {i + 1}/{len(hints)}: {hints[i]}")
    if shown == len(hints):
        print(f"That was the last hint; show_solution({name!r}) prints the answer.")


def solution_source(name: str) -> str:
    """The source of the reference: the same code the course's trainers run."""
    exercise = get_exercise(name)
    module_name = exercise.reference.partition(":")[0]
    return f"# from {module_name}\n" + inspect.getsource(exercise.reference_fn())


def show_solution(name: str) -> None:
    """Print the reference solution (syntax-highlighted in Jupyter)."""
    source = solution_source(name)
    if _in_notebook():
        from IPython.display import Code, display

        display(Code(source, language="python"))
    else:
        print(source)


class _Text(str):
    """A string that shows as itself (no quotes) when it is the last value of a cell."""

    def __repr__(self) -> str:
        return str(self)


def _dots(n: int) -> str:
    return "●" * n + "○" * (3 - n)


def exercise_header(name: str) -> str:
    """'Difficulty: ●●○  Importance: ●●●  About 10 minutes' for an exercise."""
    ex = get_exercise(name)
    return _Text(f"Difficulty: {_dots(ex.difficulty)}  Importance: {_dots(ex.importance)}  "
                 f"About {ex.minutes} minutes")


# =============================================================================================
# The exercises, stage by stage. Each: input builders, buggy variants, then register(...).
# =============================================================================================

# --- Stage 1: pretraining (notebook 01) ------------------------------------------------------


def _lm_batch(lengths: list[int], seq: int, vocab: int, left_pad: bool, seed: int) -> Callable[[], dict]:
    """Inputs for a next-token loss: random logits, token ids, and padding on one side."""

    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(len(lengths), seq, vocab, generator=g).requires_grad_()
        input_ids = torch.randint(0, vocab - 1, (len(lengths), seq), generator=g)
        attention_mask = torch.zeros(len(lengths), seq, dtype=torch.long)
        for row, n in enumerate(lengths):
            real = slice(seq - n, seq) if left_pad else slice(0, n)
            attention_mask[row, real] = 1
        input_ids[attention_mask == 0] = vocab - 1  # the pad id: a real token id that must not count
        return {"logits": logits, "input_ids": input_ids, "attention_mask": attention_mask}

    return make


def _token_losses(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view_as(targets)


def _ntl_no_shift(logits, input_ids, attention_mask):
    per_token = _token_losses(logits, input_ids)
    return (per_token * attention_mask).sum() / attention_mask.sum()


def _ntl_shift_backwards(logits, input_ids, attention_mask):
    per_token = _token_losses(logits[:, 1:], input_ids[:, :-1])
    mask = attention_mask[:, :-1]
    return (per_token * mask).sum() / mask.sum()


def _ntl_padding_in_mean(logits, input_ids, attention_mask):
    return _token_losses(logits[:, :-1], input_ids[:, 1:]).mean()


def _ntl_mask_wrong_side(logits, input_ids, attention_mask):
    per_token = _token_losses(logits[:, :-1], input_ids[:, 1:])
    mask = attention_mask[:, :-1]
    return (per_token * mask).sum() / mask.sum()


def _ntl_sum(logits, input_ids, attention_mask):
    return (_token_losses(logits[:, :-1], input_ids[:, 1:]) * attention_mask[:, 1:]).sum()


def _ntl_mean_of_sequence_means(logits, input_ids, attention_mask):
    mask = attention_mask[:, 1:]
    per_sequence = (_token_losses(logits[:, :-1], input_ids[:, 1:]) * mask).sum(1) / mask.sum(1)
    return per_sequence.mean()


register(Exercise(
    name="next_token_loss",
    reference="helpers.pretrain:next_token_loss",
    difficulty=2, importance=3, minutes=10,
    cases=[
        Case("one sequence without padding", _lm_batch([6], 6, 7, left_pad=False, seed=1)),
        Case("a batch of 3 with right padding", _lm_batch([6, 4, 2], 6, 7, left_pad=False, seed=2)),
        Case("a batch of 3 with left padding", _lm_batch([5, 6, 3], 6, 7, left_pad=True, seed=3)),
        Case("a batch whose second row has one real token (nothing to predict)",
             _lm_batch([5, 1], 5, 4, left_pad=False, seed=4)),
        Case("a batch of 4 with a 50-token vocabulary", _lm_batch([12, 9, 11, 3], 12, 50, left_pad=False, seed=5)),
    ],
    bugs=[
        KnownBug("the logits at position t predict token t+1: compare logits[:, :-1] with input_ids[:, 1:]",
                 _ntl_no_shift),
        KnownBug("you shifted the wrong way: the logits at position t predict token t+1, so drop the LAST "
                 "logit (logits[:, :-1]) and the FIRST token (input_ids[:, 1:])", _ntl_shift_backwards),
        KnownBug("padding positions change your loss: apply the mask", _ntl_padding_in_mean),
        KnownBug("the mask must line up with the targets: use attention_mask[:, 1:], not attention_mask[:, :-1]",
                 _ntl_mask_wrong_side),
        KnownBug("you return the sum: divide by the number of real target tokens to get the mean",
                 _ntl_sum),
        KnownBug("you average each sequence first, so a short sequence's tokens weigh more: sum the masked "
                 "losses over the whole batch and divide by the total number of real target tokens",
                 _ntl_mean_of_sequence_means),
    ],
    hints=[
        "The logits at position t are the model's guess for token t+1: the last position has nothing "
        "to predict and the first token is never predicted.",
        "Shift: logits[:, :-1] against targets input_ids[:, 1:]; F.cross_entropy(..., reduction='none') "
        "wants (N, vocab) logits and (N,) targets, so flatten with .reshape.",
        "A target counts only where attention_mask[:, 1:] is 1: multiply the per-token losses by that "
        "mask, sum, and divide by the mask's sum.",
    ],
))


# --- Stage 1: generation (notebook 01) -------------------------------------------------------

_SAMPLING_LOGITS = torch.tensor([
    [2.0, 1.0, 0.0, -1.0, 0.5, -2.0],
    [0.0, 0.3, -0.4, 1.2, 0.1, 0.8],
    [-1.0, 1.5, 1.0, -0.5, 0.0, 2.5],
])
_DRAWS = 4000  # frequencies are then within about 0.008 (one sd) of the true probabilities


def _sampling_inputs(temperature: float, seed: int) -> Callable[[], dict]:
    """The rows of _SAMPLING_LOGITS repeated _DRAWS times: one call gives _DRAWS samples per row."""
    def make() -> dict:
        return {"logits": _SAMPLING_LOGITS.repeat(_DRAWS, 1), "temperature": temperature,
                "generator": torch.Generator().manual_seed(seed)}
    return make


def _greedy_inputs() -> dict:
    g = torch.Generator().manual_seed(7)
    return {"logits": torch.randn(4, 10, generator=g) * 3, "temperature": 0.0,
            "generator": torch.Generator().manual_seed(7)}


def _frequencies(samples: torch.Tensor, inputs: dict) -> torch.Tensor:
    """How often each token was drawn for each distinct row of logits."""
    vocab, rows = inputs["logits"].size(-1), _SAMPLING_LOGITS.size(0)
    if samples.min() < 0 or samples.max() >= vocab:
        raise ValueError(f"token ids must be between 0 and {vocab - 1}, got {samples.min()}..{samples.max()}")
    return F.one_hot(samples.long().view(-1, rows), vocab).float().mean(0)


def _sample_times_t(logits, temperature, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial(torch.softmax(logits * temperature, -1), 1, generator=generator).squeeze(-1)


def _sample_without_softmax(logits, temperature, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial(logits / temperature, 1, generator=generator).squeeze(-1)


def _sample_argmax(logits, temperature, generator=None):
    return logits.argmax(-1)


def _sample_ignoring_t(logits, temperature, generator=None):
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)


def _sample_dividing_by_zero(logits, temperature, generator=None):
    return torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator).squeeze(-1)


_sampled = Close(rtol=0.0, atol=0.04)  # about 5 sd of a frequency estimated from _DRAWS draws

register(Exercise(
    name="sample_with_temperature",
    reference="helpers.generation:sample_next_token",
    difficulty=1, importance=2, minutes=10,
    cases=[
        Case("temperature 0 (greedy) on 4 rows of logits", _greedy_inputs, compare=exact()),
        Case(f"temperature 1 (token frequencies over {_DRAWS} draws per row)", _sampling_inputs(1.0, 11),
             _frequencies, _sampled),
        Case(f"temperature 0.5 (token frequencies over {_DRAWS} draws per row)", _sampling_inputs(0.5, 12),
             _frequencies, _sampled),
        Case(f"temperature 2 (token frequencies over {_DRAWS} draws per row)", _sampling_inputs(2.0, 13),
             _frequencies, _sampled),
        Case("temperature 0 on the same rows, repeated", _sampling_inputs(0.0, 14), _frequencies, exact()),
    ],
    bugs=[
        KnownBug("divide the logits by the temperature, don't multiply: a small T must sharpen the "
                 "distribution (softmax(logits / T))", _sample_times_t),
        KnownBug("torch.multinomial wants probabilities: apply torch.softmax(logits / T, dim=-1) first",
                 _sample_without_softmax),
        KnownBug("you always return the most likely token: that is only right at T = 0; otherwise draw "
                 "with torch.multinomial from softmax(logits / T)", _sample_argmax),
        KnownBug("your samples don't depend on the temperature: divide the logits by T before the softmax",
                 _sample_ignoring_t),
        KnownBug("temperature 0 means greedy decoding: return logits.argmax(-1) instead of dividing by zero",
                 _sample_dividing_by_zero),
    ],
    hints=[
        "Temperature rescales the logits before the softmax: p = softmax(logits / T). T < 1 sharpens, "
        "T > 1 flattens, and T = 0 is the limit where all the mass is on the argmax.",
        "torch.multinomial(probs, num_samples=1, generator=generator) draws one id per row with shape "
        "(batch, 1); .squeeze(-1) makes it (batch,).",
        "Handle temperature == 0 first with logits.argmax(dim=-1), before any division.",
    ],
))


# --- Step 1: supervised fine-tuning (notebook 02) --------------------------------------------


def _sft_batch(rows: list[tuple[int, int]], seq: int, vocab: int, seed: int) -> Callable[[], dict]:
    """A left-padded chat batch: each row has `pad` padding tokens, a prompt, then an answer.

    rows: (prompt_length, answer_length) per row; the rest of `seq` is left padding.
    """

    def make() -> dict:
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(len(rows), seq, vocab, generator=g).requires_grad_()
        input_ids = torch.randint(0, vocab - 1, (len(rows), seq), generator=g)
        attention_mask = torch.zeros(len(rows), seq, dtype=torch.long)
        assistant_mask = torch.zeros(len(rows), seq, dtype=torch.long)
        for r, (prompt, answer) in enumerate(rows):
            start = seq - prompt - answer
            attention_mask[r, start:] = 1
            assistant_mask[r, seq - answer:] = 1
        input_ids[attention_mask == 0] = vocab - 1
        return {"logits": logits, "input_ids": input_ids, "attention_mask": attention_mask,
                "assistant_mask": assistant_mask}

    return make


def _sft_all_tokens(logits, input_ids, attention_mask, assistant_mask):
    return _ntl_reference(logits, input_ids, attention_mask)


def _sft_no_shift(logits, input_ids, attention_mask, assistant_mask):
    counted = (assistant_mask * attention_mask).float()
    return (_token_losses(logits, input_ids) * counted).sum() / counted.sum()


def _sft_padding_in_mean(logits, input_ids, attention_mask, assistant_mask):
    counted = (assistant_mask[:, 1:] * attention_mask[:, 1:]).float()
    per_token = _token_losses(logits[:, :-1], input_ids[:, 1:])
    return (per_token * counted).sum() / attention_mask[:, 1:].sum()


def _sft_prompt_in_mean(logits, input_ids, attention_mask, assistant_mask):
    counted = (assistant_mask[:, 1:] * attention_mask[:, 1:]).float()
    per_token = _token_losses(logits[:, :-1], input_ids[:, 1:])
    return (per_token * counted).sum() / counted.numel()


def _sft_mask_unshifted(logits, input_ids, attention_mask, assistant_mask):
    counted = (assistant_mask[:, :-1] * attention_mask[:, :-1]).float()
    per_token = _token_losses(logits[:, :-1], input_ids[:, 1:])
    return (per_token * counted).sum() / counted.sum()


def _ntl_reference(logits, input_ids, attention_mask):
    from helpers.pretrain import next_token_loss

    return next_token_loss(logits, input_ids, attention_mask)


register(Exercise(
    name="masked_sft_loss",
    reference="helpers.sft:masked_sft_loss",
    difficulty=2, importance=3, minutes=10,
    cases=[
        Case("one conversation, no padding", _sft_batch([(4, 3)], 7, 9, seed=21)),
        Case("three conversations, left padded", _sft_batch([(3, 2), (4, 4), (2, 1)], 9, 9, seed=22)),
        Case("a long prompt and a one-token answer", _sft_batch([(7, 1), (2, 5)], 8, 12, seed=23)),
        Case("four conversations, 40-token vocabulary", _sft_batch([(5, 4), (3, 6), (6, 2), (2, 2)], 10, 40, seed=24)),
    ],
    bugs=[
        KnownBug("prompt tokens are not masked: the loss must count only the assistant's tokens "
                 "(multiply by assistant_mask)", _sft_all_tokens),
        KnownBug("labels are not shifted: the logits at position t predict token t+1, so compare "
                 "logits[:, :-1] with input_ids[:, 1:] (and shift the masks the same way)", _sft_no_shift),
        KnownBug("padding is counted in the mean: divide by the number of assistant tokens, "
                 "not by every real token", _sft_padding_in_mean),
        KnownBug("you divide by every position of the batch (prompt and padding included): divide by "
                 "the number of counted assistant tokens", _sft_prompt_in_mean),
        KnownBug("the masks must line up with the targets: use assistant_mask[:, 1:] and "
                 "attention_mask[:, 1:], not [:, :-1]", _sft_mask_unshifted),
    ],
    hints=[
        "This is the next-token loss of notebook 01 with one more mask: only the assistant's tokens "
        "are targets.",
        "counted = assistant_mask[:, 1:] * attention_mask[:, 1:] marks the targets that count.",
        "Per-token cross-entropy of logits[:, :-1] against input_ids[:, 1:], times counted, summed, "
        "divided by counted.sum().",
    ],
))


# --- Step 2: rankings and the reward model (notebooks 03 and 04) -----------------------------


def _pairs_inputs(ranks: list[int]) -> Callable[[], dict]:
    return lambda: {"ranks": list(ranks)}


def _as_pair_set(pairs, inputs) -> list:
    if not isinstance(pairs, (list, tuple, set)):
        raise TypeError(f"expected a list of (winner, loser) pairs, got {type(pairs).__name__}")
    return sorted(tuple(int(x) for x in p) for p in pairs)


def _pairs_keep_ties(ranks):
    return [(i, j) if ranks[i] <= ranks[j] else (j, i)
            for i in range(len(ranks)) for j in range(i + 1, len(ranks))]


def _pairs_reversed(ranks):
    return [(j, i) if ranks[i] < ranks[j] else (i, j)
            for i in range(len(ranks)) for j in range(i + 1, len(ranks)) if ranks[i] != ranks[j]]


def _pairs_adjacent_only(ranks):
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    return [(a, b) for a, b in zip(order, order[1:]) if ranks[a] < ranks[b]]


register(Exercise(
    name="preference_pairs",
    reference="helpers.labelers:preference_pairs",
    difficulty=1, importance=3, minutes=10,
    cases=[
        Case("A > B > C > D (ranks [1, 2, 3, 4])", _pairs_inputs([1, 2, 3, 4]), _as_pair_set, exact()),
        Case("D > C > A = B (ranks [3, 3, 2, 1])", _pairs_inputs([3, 3, 2, 1]), _as_pair_set, exact()),
        Case("two responses tied for first of five", _pairs_inputs([1, 1, 3, 4, 5]), _as_pair_set, exact()),
        Case("all tied", _pairs_inputs([1, 1, 1]), _as_pair_set, exact()),
    ],
    bugs=[
        KnownBug("tied responses carry no preference: drop pairs with equal ranks", _pairs_keep_ties),
        KnownBug("rank 1 is the best: the winner of a pair is the response with the SMALLER rank",
                 _pairs_reversed),
        KnownBug("every two responses form a pair, not only neighbours in the ranking: K = 4 gives "
                 "C(4, 2) = 6 pairs", _pairs_adjacent_only),
    ],
    hints=[
        "Loop over every unordered pair i < j (itertools.combinations(range(K), 2)).",
        "If ranks[i] < ranks[j], response i won: append (i, j); if ranks[j] < ranks[i], append (j, i); "
        "equal ranks: skip.",
    ],
))


def _rm_inputs(rewards: list[float], ranks: list[int]) -> Callable[[], dict]:
    def make() -> dict:
        from helpers.labelers import preference_pairs

        return {"rewards": torch.tensor(rewards).requires_grad_(), "pairs": preference_pairs(ranks)}
    return make


def _rm_wrong_sign(rewards, pairs):
    w = torch.tensor([a for a, _ in pairs]); l = torch.tensor([b for _, b in pairs])  # noqa: E702
    return -F.logsigmoid(rewards[l] - rewards[w]).mean()


def _rm_sum(rewards, pairs):
    w = torch.tensor([a for a, _ in pairs]); l = torch.tensor([b for _, b in pairs])  # noqa: E702
    return -F.logsigmoid(rewards[w] - rewards[l]).sum()


def _rm_no_log(rewards, pairs):
    w = torch.tensor([a for a, _ in pairs]); l = torch.tensor([b for _, b in pairs])  # noqa: E702
    return -torch.sigmoid(rewards[w] - rewards[l]).mean()


def _rm_positive(rewards, pairs):
    w = torch.tensor([a for a, _ in pairs]); l = torch.tensor([b for _, b in pairs])  # noqa: E702
    return F.logsigmoid(rewards[w] - rewards[l]).mean()


register(Exercise(
    name="ranking_loss",
    reference="helpers.reward:ranking_loss",
    difficulty=2, importance=3, minutes=10,
    cases=[
        Case("K = 4, a full ranking (6 pairs)", _rm_inputs([0.5, -0.2, 1.5, 0.1], [2, 4, 1, 3])),
        Case("K = 4 with a tie (5 pairs)", _rm_inputs([1.0, 0.7, -0.3, 2.0], [3, 3, 2, 1])),
        Case("K = 2 (1 pair)", _rm_inputs([0.3, 0.9], [1, 2])),
        Case("K = 6, rewards far apart", _rm_inputs([4.0, -3.0, 0.0, 2.5, -1.0, 1.0], [1, 6, 4, 2, 5, 3])),
    ],
    bugs=[
        KnownBug("sign error: the preferred response should score higher, so the loss is "
                 "-log sigmoid(r_w - r_l), not -log sigmoid(r_l - r_w)", _rm_wrong_sign),
        KnownBug("divide by the number of pairs, C(K, 2): the paper's 1 / C(K, 2) keeps a prompt with "
                 "many responses from outweighing the others", _rm_sum),
        KnownBug("take the log: the loss is -log sigmoid(r_w - r_l) (the log-likelihood of the "
                 "labeler's choice under the Bradley-Terry model)", _rm_no_log),
        KnownBug("a loss must be minimised: put a minus sign in front of log sigmoid", _rm_positive),
    ],
    hints=[
        "Bradley-Terry: the probability that the labeler prefers w over l is sigmoid(r_w - r_l).",
        "Gather r_w and r_l with index tensors built from the pairs, then "
        "-F.logsigmoid(r_w - r_l).mean().",
    ],
))
