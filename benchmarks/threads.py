"""How fast the course's models train at 1, 2, 4, ... CPU threads, and the thread count chosen.

    python benchmarks/threads.py                 # both model sizes, every candidate thread count
    python benchmarks/threads.py --busy          # again with one more process keeping a core busy
    python benchmarks/threads.py --steps 8       # longer timings (less noise)

It measures afresh and updates the cached choice (``helpers.speed``), which the notebooks, the
course runner, the tests and the other benchmarks then use. ``--busy`` shows why the choice is
measured rather than fixed: with another process on one core, more threads can be slower.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import speed  # noqa: E402


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def table(sizes: list[str], counts: list[int], steps: int) -> dict[str, dict[int, float]]:
    import torch

    rows = {}
    for size in sizes:
        torch.manual_seed(0)
        model = speed._probe_model(size)
        rows[size] = {}
        for _ in range(speed.ROUNDS):  # interleaved rounds, best of each: see speed.measure
            for n in counts:
                rows[size][n] = max(rows[size].get(n, 0.0), speed.training_speed(n, model, steps=steps))
    return rows


def print_table(title: str, rows: dict[str, dict[int, float]]) -> None:
    counts = sorted(next(iter(rows.values())))
    print(f"\n{title}: training tokens per second (forward, backward, AdamW; "
          f"batch {speed.PROBE_BATCH} x {speed.PROBE_SEQ} tokens)")
    header = f"{'model':<8}" + "".join(f"{f'{n} thread' + 's' * (n > 1):>14}" for n in counts) + f"{'fastest':>10}"
    print(header)
    print("-" * len(header))
    for size, speeds in rows.items():
        best = speed.fastest(speeds)
        cells = "".join(f"{speeds[n]:>14,.0f}" for n in counts)
        print(f"{size:<8}{cells}{best:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,big", help="model sizes (models.MODEL_SIZES)")
    parser.add_argument("--steps", type=int, default=speed.TIMED_STEPS, help="timed steps per measurement")
    parser.add_argument("--busy", action="store_true", help="also measure with one core kept busy")
    args = parser.parse_args()
    for name in speed.OVERRIDES:
        if os.environ.get(name):
            print(f"note: {name}={os.environ[name]} is set; it overrides the measured choice in the course")

    counts = speed.candidates()
    print(f"{speed.usable_cores()} usable cores; candidates {counts}; machine {speed.machine_key()}")
    print_table("as the machine is now", table(args.sizes.split(","), counts, args.steps))
    if args.busy:
        spinner = multiprocessing.Process(target=_spin, args=(600.0,), daemon=True)
        spinner.start()
        try:
            print_table("with one more process keeping a core busy", table(args.sizes.split(","), counts, args.steps))
        finally:
            spinner.terminate()

    choice = speed.choose(measure_now=True, quiet=True)
    print(f"\nchoice cached in {speed.cache_file()}: {choice.describe()}  "
          f"({', '.join(f'{n}: {v:,.0f}' for n, v in sorted(choice.tokens_per_second.items()))} tokens/s)")


if __name__ == "__main__":
    main()
