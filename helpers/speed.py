"""This machine's training speed: how many CPU threads to use, and how long a stage will take.

Why the course chooses its threads. PyTorch uses one thread per core by default. The course's
models are tiny (a width of 128), so each matrix product is small, and splitting it over cores
pays only when every core is free: on a quiet 2-core machine two threads train faster than one,
but as soon as another process keeps one core busy, two threads wait on each other and train far
slower than one (``benchmarks/threads.py`` prints both cases). No fixed rule is right on every
machine, so the course measures: a few training steps of the course's model at 1, 2, 4, ...
threads, once per machine start, and keeps the fastest. The choice is cached in
``~/.cache/instructgpt-course/speed.json`` (``COURSE_CACHE`` moves it) under a key naming the
machine, its boot, its usable cores and the torch version; ``python -m helpers.course`` measures
afresh before each run of the course.

You decide instead with ``COURSE_THREADS=N`` (or PyTorch's own ``OMP_NUM_THREADS=N``), set
before the setup cell; ``python benchmarks/threads.py`` measures again and updates the cache.

The same measurement gives the machine's speed in tokens per second, which turns the work of a
stage (tokens to train on) into the time printed before training it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.config import device
from helpers.files import replace_file

#: Environment variables that set the thread count by hand, in the order they are honoured.
OVERRIDES = ("COURSE_THREADS", "OMP_NUM_THREADS")

#: The step that is timed: one training step (forward, backward, AdamW) of a batch this shape.
#: 16 blocks of 128 tokens: the shape of the tiny profile's pretraining steps, so that the
#: measured speed is the speed pretraining will run at.
PROBE_BATCH, PROBE_SEQ = 16, 128
PROBE_VOCAB = 2048  # the tiny profile's vocabulary
WARMUP_STEPS, TIMED_STEPS, ROUNDS = 2, 4, 2

_applied: "ThreadChoice | None" = None


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads torch uses, why, and the measured speeds behind it."""

    threads: int
    source: str  # "COURSE_THREADS", "OMP_NUM_THREADS", "measured", "cached" or "not a CPU"
    tokens_per_second: dict[int, float] = field(default_factory=dict)  # threads -> training speed

    @property
    def speed(self) -> float | None:
        """Training tokens per second of the tiny model at the chosen thread count, if measured."""
        return self.tokens_per_second.get(self.threads)

    def describe(self) -> str:
        """For the environment line: ``threads=2 (measured: fastest here)``."""
        why = {"measured": "measured: fastest here", "cached": "fastest here, measured earlier",
               "not a CPU": "training runs on the GPU"}.get(self.source, f"set by {self.source}")
        return f"threads={self.threads} ({why})"


def usable_cores() -> int:
    """Cores this process may run on (a container or ``taskset`` may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def candidates(cores: int | None = None) -> list[int]:
    """Thread counts worth timing: 1, 2, 4, ... up to the usable cores (and the cores themselves)."""
    cores = cores or usable_cores()
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def _override() -> tuple[str, int] | None:
    for name in OVERRIDES:
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not a whole number of threads; set it to e.g. 1 or 2, "
                             f"or unset it to let the course measure the fastest count.") from None
        if threads < 1:
            raise ValueError(f"{name}={threads} must be at least 1 (or unset it to let the course measure).")
        return name, threads
    return None


def cache_file() -> Path:
    root = os.environ.get("COURSE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "instructgpt-course"
    return Path(root) / "speed.json"


def machine_key() -> str:
    """What a measurement is valid for: the machine since it last started (what else runs on it
    changes more often than that, but not usually within a session), its usable cores and the
    torch build."""
    import torch

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "-"
    return f"{platform.node()}|boot={boot}|cores={usable_cores()}|torch={torch.__version__}"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, choice: ThreadChoice) -> None:
    data = _read_cache()
    data[key] = {"threads": choice.threads,
                 "tokens_per_second": {str(k): v for k, v in choice.tokens_per_second.items()},
                 "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write_json(data)


def _write_json(data: dict) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: another process reading the cache sees the old file or the new one, never half
        replace_file(path, json.dumps(data, indent=2, sort_keys=True).encode())
    except OSError:
        pass  # a read-only home only costs a new measurement next time


def _cached(key: str) -> ThreadChoice | None:
    entry = _read_cache().get(key)
    try:
        speeds = {int(k): float(v) for k, v in entry["tokens_per_second"].items()}
        threads = int(entry["threads"])
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return ThreadChoice(threads, "cached", speeds) if threads >= 1 else None


def _probe_model(size: str = "tiny"):
    """A model of one of the course's shapes (``models.MODEL_SIZES``), random weights."""
    # Imported when a probe model is built: transformers and helpers.models (which loads torch)
    # are slow to load, and a thread count from the cache or the environment needs neither.
    from transformers import LlamaConfig, LlamaForCausalLM

    from helpers.models import model_size

    shape = model_size(size)
    config = LlamaConfig(hidden_size=shape.n_embd, intermediate_size=4 * shape.n_embd,
                         num_hidden_layers=shape.n_layer, num_attention_heads=shape.n_head,
                         num_key_value_heads=shape.n_head, vocab_size=PROBE_VOCAB,
                         max_position_embeddings=shape.n_positions, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def training_speed(threads: int, model=None, steps: int = TIMED_STEPS, batch: int = PROBE_BATCH,
                   seq: int = PROBE_SEQ) -> float:
    """Tokens per second of training steps (forward, backward, AdamW) with ``threads`` threads.

    The thread count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        model = model if model is not None else _probe_model()
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        vocab = model.config.vocab_size
        blocks = torch.randint(0, vocab, (batch, seq), generator=generator)

        def step():
            logits = model(input_ids=blocks).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab), blocks[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(WARMUP_STEPS):
            step()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch * seq / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(before)


def measure(counts: list[int] | None = None, rounds: int = ROUNDS) -> dict[int, float]:
    """Training speed at each thread count: the best of ``rounds`` interleaved rounds, so that a
    moment of load elsewhere does not decide the choice against one count alone."""
    import torch

    counts = counts or candidates()
    torch.manual_seed(0)
    model = _probe_model()
    best: dict[int, float] = {}
    for _ in range(rounds):
        for n in counts:
            best[n] = max(best.get(n, 0.0), training_speed(n, model))
    return best


def fastest(speeds: dict[int, float], margin: float = 0.05) -> int:
    """The thread count to use: the fewest threads within ``margin`` of the fastest. More threads
    for under 5% more speed are not worth it: they collapse the moment another process runs."""
    top = max(speeds.values())
    return min(n for n, s in speeds.items() if s >= (1 - margin) * top)


def choose(measure_now: bool = False, quiet: bool = False) -> ThreadChoice:
    """The thread count for this process: a user's setting, else the cached measurement of this
    machine, else a new measurement (a few seconds, once per machine)."""
    import torch

    if (override := _override()) is not None:
        return ThreadChoice(override[1], override[0])
    if device().type != "cpu":
        return ThreadChoice(torch.get_num_threads(), "not a CPU")
    key = machine_key()
    if not measure_now and (cached := _cached(key)) is not None:
        return cached
    if usable_cores() == 1:
        return ThreadChoice(1, "measured", {})
    if not quiet:
        print("Choosing how many CPU threads train fastest here (once per machine, a few seconds) ...",
              flush=True)
    speeds = measure()
    choice = ThreadChoice(fastest(speeds), "measured", speeds)
    _write_cache(key, choice)
    return choice


def apply(quiet: bool = False) -> ThreadChoice:
    """Choose the thread count (see ``choose``) and set it, once per process."""
    global _applied
    if _applied is None:
        import torch

        choice = choose(quiet=quiet)
        if choice.source != "not a CPU":
            torch.set_num_threads(choice.threads)
        _applied = choice
    return _applied


# --------------------------------------------------------------------------------------------
# Run-time estimates
# --------------------------------------------------------------------------------------------

#: The probe's speed (tokens/s, at its chosen threads) on the machine where the stages'
#: reference timings (``REFERENCE_SECONDS``) were measured.
REFERENCE_SPEED = 13_000.0


def size_speed(size: str) -> float | None:
    """Training tokens per second of a model of ``size`` at the chosen threads (measured once per
    machine and size, cached); None on a GPU."""
    choice = apply(quiet=True)
    if choice.source == "not a CPU":
        return None
    if size == "tiny" and choice.speed is not None:
        return choice.speed
    key = f"{machine_key()}|size={size}|threads={choice.threads}"
    entry = _read_cache().get(key)
    if isinstance(entry, (int, float)) and entry > 0:
        return float(entry)
    tokens_per_second = training_speed(choice.threads, _probe_model(size))
    data = _read_cache()
    data[key] = tokens_per_second
    _write_json(data)
    return tokens_per_second


def training_minutes(tokens: float, size: str = "tiny") -> float | None:
    """Minutes to train a model of ``size`` on ``tokens`` tokens here; None when unknown (GPU)."""
    speed = size_speed(size)
    return None if speed is None else tokens / speed / 60


def seconds_here(reference_seconds: float) -> float | None:
    """A time measured on the reference machine, scaled to this machine's measured speed."""
    speed = size_speed("tiny")
    return None if speed is None else reference_seconds * REFERENCE_SPEED / speed


#: Seconds one unit of each stage's work took in the reference run of each profile measured on a
#: CPU: the tiny profile, full mode, the README's run of the whole course, on a machine whose probe
#: measured ``REFERENCE_SPEED``. The gpu profile has none (``benchmarks/gpu_smoke.py`` predicts
#: its times on the GPU at hand).
REFERENCE_SECONDS = {
    "tiny": {
        "sft_epoch": 10.0,  # one epoch of SFT, with its per-epoch evaluation
        "comparisons_prompt": 0.013,  # sampling K answers to one prompt and ranking them
        "rm_epoch": 17.5,  # one epoch of the reward model on the comparisons stage's rankings
        "ppo_episode": 0.027,  # one PPO episode (rollout, scoring, its share of the update)
        "ppo_ptx_episode": 0.047,  # the same with PPO-ptx's pretraining batches
        # Notebook 08, measured on the same kind of machine while another training job shared it
        # (so on the slow side): one DPO pair (two conversations through policy and reference),
        # one answer of a GRPO group (sampled, scored, its share of the update).
        "dpo_pair": 0.018,
        "grpo_answer": 0.012,
        # The bigger model (notebook 06): an SFT epoch measured alone in a run of notebook 06; its
        # PPO episodes as the ratio to the small model's measured side by side on a shared machine
        # (so rougher).
        "sft_big_epoch": 33.0,
        "ppo_big_episode": 0.039,
        "ppo_ptx_big_episode": 0.1,
    },
}


def estimate(unit: str, count: float = 1.0, profile: str = "tiny") -> str:
    """``about 3 min on this machine`` for ``count`` units of ``REFERENCE_SECONDS[profile][unit]``;
    "" when the profile has no reference time for it (or the device is not a CPU)."""
    reference = REFERENCE_SECONDS.get(profile, {}).get(unit)
    seconds = None if reference is None else seconds_here(reference * count)
    return describe_minutes(None if seconds is None else seconds / 60)


def describe_minutes(minutes: float | None, device_word: str = "on this machine") -> str:
    """``about 6 min on this machine``; ``under a minute``; or "" when unknown."""
    if minutes is None:
        return ""
    if minutes < 1:
        return f"under a minute {device_word}"
    return f"about {round(minutes)} min {device_word}"
