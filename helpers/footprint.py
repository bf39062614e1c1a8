"""What a training run costs: wall-clock seconds and peak memory, measured while it runs.

Two kinds of memory, and what each one says:

* On a GPU, the peak of memory held by tensors (``torch.cuda.max_memory_allocated``): exact, and
  what decides whether a method fits on a card.
* On a CPU there is no such counter, so ``Footprint`` watches the process's resident memory
  (RSS: what the operating system has given it) from a background thread every few milliseconds
  and reports the peak minus what the process held when the run started: the memory the run
  added. It is an estimate. A short spike between two readings can be missed, and memory the
  process freed earlier and reuses does not count as added: a run measured after another
  similar run in the same process can look cheaper than it is. Measured each in a fresh process
  (``benchmarks/frontier.py`` does), methods compare fairly.

``weights_and_optimizer_mb`` counts instead of measuring: the parameters of every model a method
keeps in memory, and the optimizer's state of the ones it trains. With the course's 1M-parameter
models that is a few megabytes, far below what the Python process, the libraries and the
activations take; with the gpu profile's 135M-parameter models it is most of the memory.
"""

from __future__ import annotations

import os
import threading
import time

import torch

MB = 2 ** 20

#: Seconds between two readings of the resident memory on a CPU.
SAMPLE_EVERY = 0.02


def resident_bytes() -> int | None:
    """The process's resident memory now (bytes), or None where it cannot be read."""
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:  # psutil is optional: Linux has the number in /proc
        pass
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Footprint:
    """A context manager: ``with Footprint() as run: train()``, then ``run.seconds`` and
    ``run.peak_mb`` (see the module docstring for what the memory means on each device), and
    ``run.as_metrics()`` for a stage's metrics."""

    def __init__(self, sample_every: float = SAMPLE_EVERY):
        self.sample_every = sample_every
        self.seconds = 0.0
        self.peak_mb: float | None = None
        self.kind = "GPU tensors" if torch.cuda.is_available() else "RSS added"
        self._start_rss = self._peak_rss = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        while not self._stop.wait(self.sample_every):
            now = resident_bytes()
            if now is not None and now > self._peak_rss:
                self._peak_rss = now

    def __enter__(self) -> Footprint:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._start_rss = self._peak_rss = resident_bytes()
            if self._start_rss is not None:
                self._thread = threading.Thread(target=self._watch, name="footprint", daemon=True)
                self._thread.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / MB
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            end = resident_bytes()
            peak = max(self._peak_rss, end or 0)
            self.peak_mb = (peak - self._start_rss) / MB
        self.seconds = time.perf_counter() - self._started

    def as_metrics(self) -> dict:
        return {"seconds": round(self.seconds, 1),
                "peak_memory_mb": None if self.peak_mb is None else round(self.peak_mb, 1),
                "memory_measured": self.kind}


def weights_and_optimizer_mb(parameters: int, kept: int, trained: int, bytes_per_number: int = 4,
                             optimizer_numbers: int = 2) -> float:
    """Megabytes of ``kept`` models of ``parameters`` parameters each in float32, plus gradients
    and Adam's two moment estimates (``optimizer_numbers``) for the ``trained`` ones among them."""
    per_model = parameters * bytes_per_number
    return (kept * per_model + trained * (1 + optimizer_numbers) * per_model) / MB
