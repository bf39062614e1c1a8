"""Self-check exercises: `check(name, fn)`, progressive hints and `show_solution(name)`.

The checking machinery lives in `helpers.exercises.checking`; the exercises themselves, one
module per notebook stage (`base_model`, `sft`, `rankings`, ...), register themselves on import.
"""

from helpers.exercises.checking import *  # noqa: F401,F403 - the public API
from helpers.exercises.checking import (  # noqa: F401 - names the tests and notebooks use
    EXERCISES, Case, Close, Exercise, KnownBug, _hints_shown, check, exact, exercise_header,
    get_exercise, hint, register, run_checks, show_solution, solution_source,
)
from helpers.exercises import base_model, evaluation, ppo, rankings, sft  # noqa: E402,F401 - registers them
from helpers.exercises import overoptimization  # noqa: E402,F401 - registers them
from helpers.exercises import beyond_ppo  # noqa: E402,F401 - registers them
from helpers.exercises.base_model import (  # noqa: F401 - the known bugs, for the tests
    _ntl_mask_wrong_side, _ntl_mean_of_sequence_means, _ntl_no_shift, _ntl_padding_in_mean,
    _ntl_shift_backwards, _ntl_sum, _sample_argmax, _sample_dividing_by_zero, _sample_ignoring_t,
    _sample_times_t, _sample_without_softmax,
)
