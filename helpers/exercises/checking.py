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

Two mistakes no output comparison shows are caught as well: a function that never returns is
stopped after `TIME_LIMIT` seconds per case ("did not return within 10 s (an infinite loop?)"),
and a function that changes an argument in place (a tensor, a list, a dict, a ranking inside a
list) is named ("your function changed its input `rewards` in place"), since the caller still
needs its inputs as they were.

Adding an exercise: write its cases (inputs builders) and buggy variants in the module of its
stage (`helpers/exercises/<stage>.py`, imported by `helpers/exercises/__init__.py`) and call
`register(Exercise(...))`; `tests/test_exercises.py` then checks automatically that the reference
passes and every variant gets its own hint.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import inspect
import math
import signal
import threading
import time
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
        if not isinstance(got, (tuple, list)):
            return f"expected a {type(expected).__name__}, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"expected {len(expected)} items, got {len(got)}"
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
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if not _is_number(got):
            return f"expected a number (like {expected!r}), got {type(got).__name__}"
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


def _is_number(x: Any) -> bool:
    """A plain number, a NumPy scalar or a one-element tensor: what a number output may be."""
    if isinstance(x, torch.Tensor):
        return x.numel() == 1
    if isinstance(x, (str, bytes)):
        return False
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Noticing a function that changes its arguments
# ---------------------------------------------------------------------------------------------


class _Fields(dict):
    """A snapshot of a dataclass's fields (told apart from a snapshot of a plain dict)."""


_NOT_COMPARED = object()


def _snapshot(value: Any) -> Any:
    """A copy of an argument, taken before the call, to compare with the argument after it.

    Tensors, lists, tuples, dicts, dataclasses (such as a Ranking) and plain values are copied
    deeply. Not compared: random generators (their state is meant to advance when used) and
    objects without value equality (a tokenizer, a model), which a deep copy could not tell
    from a changed object.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [_snapshot(v) for v in value]
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _Fields({f.name: _snapshot(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if value is None or isinstance(value, (str, bytes, int, float, complex)):
        return value
    return _NOT_COMPARED


def _unchanged(before: Any, after: Any) -> bool:
    if before is _NOT_COMPARED:
        return True
    if isinstance(before, torch.Tensor):
        if not isinstance(after, torch.Tensor) or after.shape != before.shape or after.dtype != before.dtype:
            return False
        after = after.detach()
        if before.is_floating_point() or before.is_complex():  # NaN where NaN was is unchanged
            return bool(((after == before) | (after.isnan() & before.isnan())).all())
        return torch.equal(after, before)
    if isinstance(before, _Fields):
        return all(_unchanged(v, getattr(after, k, _NOT_COMPARED)) for k, v in before.items())
    if isinstance(before, dict):
        return (isinstance(after, dict) and after.keys() == before.keys()
                and all(_unchanged(v, after[k]) for k, v in before.items()))
    if isinstance(before, list):
        return (isinstance(after, (list, tuple)) and len(after) == len(before)
                and all(_unchanged(b, a) for b, a in zip(before, after)))
    if isinstance(before, float) and isinstance(after, float) and math.isnan(before):
        return math.isnan(after)
    return type(after) is type(before) and after == before


def _mutated_input(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """The name of the first argument the call changed in place, or None."""
    for key, snapshot in before.items():
        if not _unchanged(snapshot, after[key]):
            return key
    return None


def _mutation_problem(key: str, value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return (f"your function changed its input `{key}` in place (e.g. `x /= t` or `x[...] = ...`); "
                f"the caller still needs it: compute on a new tensor (`x = x / t`)")
    return (f"your function changed its input `{key}` in place (e.g. `.sort()`, `.append()`, `.pop()` "
            f"or `{key}[i] = ...`); the caller still needs it as it was")


def _mutation_advice(key: str, value: Any) -> str:
    """What to do instead, for the kind of argument that was changed."""
    if isinstance(value, torch.Tensor):
        return f"compute on a new tensor: `{key} = {key} / t` rather than `{key} /= t`, or start from `{key}.clone()`"
    if isinstance(value, dict):
        return f"work on a copy: `{key} = dict({key})` (or `copy.deepcopy({key})` if you change what it holds)"
    return (f"build new values instead: `sorted({key})` rather than `{key}.sort()`, `{key} + [x]` rather than "
            f"`{key}.append(x)`, or work on `copy.deepcopy({key})`")


# ---------------------------------------------------------------------------------------------
# A time limit per case
# ---------------------------------------------------------------------------------------------

#: Seconds a function may take on one case before the check gives up on it (an infinite loop).
#: The cases are tiny: the references take milliseconds. ``check(..., time_limit=...)`` overrides it.
TIME_LIMIT = 10.0


class TimeLimitExceeded(BaseException):
    """Raised into a function that ran past its time limit.

    A BaseException, not an Exception: a student's `try: ... except Exception:` inside the loop
    must not swallow it and carry on looping.
    """

    def __init__(self, seconds: float, still_running: bool = False):
        self.seconds, self.still_running = seconds, still_running
        text = f"your function did not return within {seconds:g} s (an infinite loop?)"
        if still_running:
            text += "; it is still running in the background: restart the kernel to stop it"
        super().__init__(text)


def _call_with_time_limit(fn: Callable, args: list, seconds: float | None = None) -> Any:
    """``fn(*args)``, stopped with TimeLimitExceeded after ``seconds`` (None: ``TIME_LIMIT``; 0: no limit).

    On the main thread of a Unix process (a Jupyter kernel, Colab, pytest) a timer signal
    interrupts the function itself, so an infinite loop really stops. Elsewhere (Windows, a
    thread) the function runs in a helper thread that is abandoned if it does not finish, since
    Python cannot stop a thread.
    """
    seconds = TIME_LIMIT if seconds is None else seconds
    if seconds <= 0:
        return fn(*args)
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        return _call_with_alarm(fn, args, seconds)
    return _call_in_thread(fn, args, seconds)


def _call_with_alarm(fn: Callable, args: list, seconds: float) -> Any:
    start = time.monotonic()
    deadline = start + seconds
    # Another alarm may be running (pytest-timeout uses one): it is served on time and restored.
    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    outer_due = start + outer_delay if outer_delay > 0 else math.inf
    armed = True

    def on_alarm(signum, frame):
        nonlocal outer_due
        now = time.monotonic()
        if now >= outer_due:  # the other alarm was due first: this signal is its
            outer_due = math.inf
            if callable(outer_handler):
                outer_handler(signum, frame)
        if not armed:
            return
        if now >= deadline - 0.001:
            raise TimeLimitExceeded(seconds)
        signal.setitimer(signal.ITIMER_REAL, deadline - now)  # after the other alarm: ours again

    signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, min(deadline, outer_due) - start)
        return fn(*args)
    finally:
        # Disarm first. The timer may fire just now, and its exception would cut this block
        # short before the handler is restored: so retry until it is off.
        while True:
            try:
                armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except TimeLimitExceeded:
                pass
        signal.signal(signal.SIGALRM, outer_handler if outer_handler is not None else signal.SIG_DFL)
        if outer_due < math.inf:  # give the other alarm the time it had left
            signal.setitimer(signal.ITIMER_REAL, max(outer_due - time.monotonic(), 0.001), outer_interval)


def _call_in_thread(fn: Callable, args: list, seconds: float) -> Any:
    result: dict[str, Any] = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed back to the caller's thread
            result["error"] = error

    thread = threading.Thread(target=target, name="exercise-check", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeLimitExceeded(seconds, still_running=True)
    if "error" in result:
        raise result["error"]
    return result["value"]


# ---------------------------------------------------------------------------------------------
# Running a function on the cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one function did on one case."""

    summary: Any = None
    problem: str | None = None  # the output's form was wrong (None, shape, dtype, ...)
    error: BaseException | None = None  # the function raised (or ran past its time limit)
    changed: str | None = None  # the argument it changed in place
    advice: str = ""  # what to do about ``problem``, when it is specific

    @property
    def timed_out(self) -> bool:
        return isinstance(self.error, TimeLimitExceeded)


def _call(fn: Callable, case: Case, time_limit: float | None = None) -> tuple[Any, dict, dict, BaseException | None]:
    """(output, the inputs after the call, a snapshot of them from before, error)."""
    inputs = case.make_inputs()
    before = _snapshot(inputs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed)
        try:
            return _call_with_time_limit(fn, list(inputs.values()), time_limit), inputs, before, None
        except (Exception, TimeLimitExceeded) as error:  # the student's code may raise anything
            return None, inputs, before, error


def _run(fn: Callable, case: Case, reference_output: Any, time_limit: float | None = None) -> Outcome:
    output, inputs, before, error = _call(fn, case, time_limit)
    if error is not None:
        return Outcome(error=error)
    problem = _output_problem(output, reference_output)
    if problem:
        return Outcome(problem=problem)
    changed = _mutated_input(before, inputs)
    if changed is not None:
        value = inputs[changed]
        return Outcome(problem=_mutation_problem(changed, value), changed=changed,
                       advice=_mutation_advice(changed, value))
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


def run_checks(name: str, fn: Callable, time_limit: float | None = None) -> CheckResult:
    """Run `fn` on every case of exercise `name`; returns the verdict without printing it.

    time_limit: seconds `fn` may take on one case (default `TIME_LIMIT`; 0 for no limit).
    """
    # The cases are tiny tensors: one thread avoids thread start-up costs (and is much faster on a
    # busy machine). The caller's setting is restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_checks(name, fn, time_limit)
    finally:
        torch.set_num_threads(threads)


def _run_checks(name: str, fn: Callable, time_limit: float | None = None) -> CheckResult:
    exercise = get_exercise(name)
    reference = exercise.reference_fn()
    total = len(exercise.cases)
    if not callable(fn):
        return CheckResult(name, "failed", 0, total, f"expected a function, got {type(fn).__name__}",
                           "pass the function itself: check(name, my_function), without calling it")

    # The reference's raw outputs set the expected form (type, shape, dtype) of every output.
    reference_outputs = [_call(reference, case)[0] for case in exercise.cases]
    reference_outcomes = [_run(reference, c, out) for c, out in zip(exercise.cases, reference_outputs)]
    student_outcomes: list[Outcome] = []
    for case, expected in zip(exercise.cases, reference_outputs):
        if student_outcomes and student_outcomes[-1].timed_out:
            # A function that looped forever once would most likely loop again: not waiting the
            # whole limit on every remaining case keeps the verdict quick.
            student_outcomes.append(Outcome(error=student_outcomes[-1].error))
        else:
            student_outcomes.append(_run(fn, case, expected, time_limit))

    first = student_outcomes[0]
    if isinstance(first.error, NotImplementedError):
        return CheckResult(name, "not attempted", 0, total)

    differences = [None if s.error is not None or s.problem is not None else _compare(case, s, r)
                   for case, s, r in zip(exercise.cases, student_outcomes, reference_outcomes)]
    failing = [i for i, (s, d) in enumerate(zip(student_outcomes, differences))
               if s.error is not None or s.problem is not None or d]
    if not failing:
        return CheckResult(name, "passed", total, total)

    i = failing[0]
    case, outcome = exercise.cases[i], student_outcomes[i]
    if outcome.timed_out:
        where = _student_line(outcome.error, fn)  # where the loop was when it was stopped
        failure = f"On {case.description}: {outcome.error}" + (f"\n  (it was {where})" if where else "")
    elif outcome.error is not None:
        what = f"{type(outcome.error).__name__}: {outcome.error}".strip()
        where = _student_line(outcome.error, fn)
        failure = f"On {case.description}, your function raised {what}" + (f"\n  ({where})" if where else "")
    else:
        what = outcome.problem or differences[i]
        failure = f"On {case.description}: {what}"

    bug = None if outcome.timed_out else _recognise_bug(exercise, student_outcomes, reference_outputs, failing)
    if outcome.timed_out:
        advice = ("look for a loop that never ends: a `while` whose condition never becomes false "
                  "(is its variable updated inside the loop?), or a loop over a list it keeps growing")
    elif bug is not None:
        advice = bug.hint
    elif outcome.changed:
        advice = f"your function changed its input `{outcome.changed}` in place; {outcome.advice}"
    elif outcome.problem is not None and outcome.problem.startswith("your function returned None"):
        advice = "end your function with `return <the result>`"
    elif outcome.error is not None and any(w in str(outcome.error).lower() for w in ("size", "shape", "dimension")):
        advice = ("a shape mismatch: print the .shape of each tensor used on that line and compare it with what "
                  "the function you call expects")
    else:
        advice = exercise.hints[0] if exercise.hints else ""
    return CheckResult(name, "failed", total - len(failing), total, failure, advice, bug)


def _compare(case: Case, student: Outcome, reference: Outcome) -> str | None:
    """The case's comparison; an output it cannot even compare is a difference, not a crash."""
    try:
        return case.compare(student.summary, reference.summary)
    except Exception as error:  # noqa: BLE001 - e.g. a str where a number belongs
        return f"your output could not be compared with the expected one: {type(error).__name__}: {error}"


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


def check(name: str, fn: Callable, time_limit: float | None = None) -> Callable:
    """Check a student's function; return it if it passes, else the reference.

    time_limit: seconds the function may take on one case (default `TIME_LIMIT`, 10 s; 0 for no
    limit). A function that runs longer is stopped and reported as "did not return".
    """
    result = run_checks(name, fn, time_limit)
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
