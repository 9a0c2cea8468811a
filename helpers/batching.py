"""Batching for LLM serving: static batches, and a dynamic batcher under simulated traffic.

Decoding one token at batch size 1 reads every weight from memory to do very little
arithmetic; a batch of B sequences reads the weights once for B tokens. So
throughput grows with the batch size until the arithmetic, not the memory, is the
limit. Static batching (:func:`static_batching_sweep`) measures that curve.

A server does not receive its requests in batches: they arrive one by one. A
*dynamic batcher* holds the first waiting request until either ``max_batch``
requests are queued or the oldest has waited ``max_wait_ms``, then runs them as one
batch. :func:`simulate_server` replays a seeded Poisson arrival stream through
such a batcher on a virtual clock: the model time of every batch is real (the
callback runs the model and returns the seconds it took), while idle time between
arrivals is skipped instead of slept, so a simulation of a minute of traffic takes
only as long as the model work in it.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from . import config

# Named settings of the dynamic-batching demo (the profile-dependent request count is in helpers/config.py).
DYNAMIC_MAX_BATCH = 8
DYNAMIC_MAX_WAIT_MS = 200.0
LOAD_FACTOR = 4.0  # arrival rate as a multiple of what an unbatched server can answer


def dynamic_requests() -> int:
    """Number of simulated requests for the active profile."""
    return config.profile().dynamic_requests


# --- static batching ----------------------------------------------------------------------

def static_batching_sweep(model, tokenizer, prompts: Sequence[str], batch_sizes: Sequence[int],
                          new_tokens: int, repeats: int = 3) -> list[dict]:
    """Generation throughput of one batch of the first ``b`` prompts, for every ``b`` in ``batch_sizes``.

    Every batch generates exactly ``new_tokens`` tokens per sequence (greedy), so
    the work per sequence is the same at every batch size. Returns one row per
    batch size with ``tokens_per_s`` (median over ``repeats``), its min and max,
    and ``latency_s`` (seconds for the whole batch). Only the first batch size
    gets an untimed warm-up pass.
    """
    from .metrics import generation_speed

    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("batch_sizes must be positive integers, e.g. (1, 2, 4, 8, 16, 32).")
    if max(batch_sizes) > len(prompts):
        raise ValueError(f"The largest batch ({max(batch_sizes)}) needs at least that many prompts; "
                         f"got {len(prompts)}.")
    rows = []
    for position, batch_size in enumerate(tqdm(list(batch_sizes), desc="static batching")):
        speed = generation_speed(model, tokenizer, list(prompts[:batch_size]), new_tokens, batch_size=batch_size,
                                 repeats=repeats, warmup=1 if position == 0 else 0)
        rows.append({"batch_size": batch_size, "tokens_per_s": speed["tokens_per_s"],
                     "tokens_per_s_min": speed["tokens_per_s_min"], "tokens_per_s_max": speed["tokens_per_s_max"],
                     "latency_s": speed["latency_s"]})
    return rows


def batch_latency_model(sweep: Sequence[dict]) -> Callable[[int], float]:
    """Seconds to serve a batch of ``n`` requests, interpolated linearly between measured batch sizes.

    Beyond the largest measured size the last segment is extended.
    """
    points = sorted((row["batch_size"], row["latency_s"]) for row in sweep)
    if not points:
        raise ValueError("Pass the rows of a static batching sweep.")
    sizes = [size for size, _ in points]

    def latency(n: int) -> float:
        if n < 1:
            raise ValueError("A batch holds at least one request.")
        if len(points) == 1:
            return points[0][1] * n / points[0][0]
        position = min(max(bisect.bisect_left(sizes, n), 1), len(points) - 1)
        (x0, y0), (x1, y1) = points[position - 1], points[position]
        return max(y0 + (y1 - y0) * (n - x0) / (x1 - x0), 1e-9)

    return latency


# --- dynamic batching on a virtual clock ----------------------------------------------------

def poisson_arrivals(count: int, rate_per_s: float, seed: int = 0) -> list[float]:
    """Arrival times (seconds from 0) of ``count`` requests with exponential gaps of mean ``1 / rate``."""
    if count < 1 or rate_per_s <= 0:
        raise ValueError("count must be at least 1 and rate_per_s positive.")
    generator = random.Random(seed)
    times, now = [], 0.0
    for _ in range(count):
        now += generator.expovariate(rate_per_s)
        times.append(now)
    return times


@dataclass(frozen=True)
class DynamicBatcher:
    """The batching rule: dispatch when ``max_batch`` requests wait or the oldest has waited ``max_wait_ms``.

    ``DynamicBatcher(1, 0)`` is a server without batching: one request at a time, in arrival order.
    """

    max_batch: int = DYNAMIC_MAX_BATCH
    max_wait_ms: float = DYNAMIC_MAX_WAIT_MS

    def __post_init__(self):
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a whole number of at least 1, got {self.max_batch!r}.")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be zero or positive, got {self.max_wait_ms!r}.")

    def next_batch(self, arrivals: Sequence[float], first: int, free_at: float) -> tuple[float, list[int]]:
        """When the next batch starts and which requests it holds.

        ``arrivals`` are sorted arrival times, ``first`` is the oldest request not yet
        served, and the server is free from ``free_at``. The batch closes at the
        earliest moment the server is free and either ``max_batch`` requests have
        arrived or the oldest has waited ``max_wait_ms``.
        """
        if not 0 <= first < len(arrivals):
            raise ValueError("first must index a request that has not been served.")
        oldest = arrivals[first]
        last_slot = first + self.max_batch - 1
        full_at = arrivals[last_slot] if last_slot < len(arrivals) else math.inf
        close = max(free_at, oldest, min(oldest + self.max_wait_ms / 1000.0, full_at))
        members = [index for index in range(first, min(first + self.max_batch, len(arrivals)))
                   if arrivals[index] <= close]
        return close, members


@dataclass(frozen=True)
class Served:
    """One request's path through the simulated server."""

    index: int
    arrival_s: float
    start_s: float
    finish_s: float
    batch_size: int

    @property
    def latency_s(self) -> float:
        """From arrival to the full answer."""
        return self.finish_s - self.arrival_s


def simulate_server(arrivals: Sequence[float], run_batch: Callable[[list[int]], float],
                    batcher: DynamicBatcher | None = None, progress: bool = False) -> list[Served]:
    """Serve ``arrivals`` (sorted seconds) with ``batcher``; ``run_batch(indices)`` returns a batch's seconds.

    ``run_batch`` may run the real model (and time it) or return a modelled
    duration. One batch runs at a time, as on a single accelerator.
    """
    if list(arrivals) != sorted(arrivals):
        raise ValueError("arrivals must be sorted in time.")
    batcher = batcher or DynamicBatcher(1, 0.0)
    served: list[Served] = []
    free_at, first = 0.0, 0
    with tqdm(total=len(arrivals), desc=f"max_batch={batcher.max_batch}", disable=not progress, leave=False) as bar:
        while first < len(arrivals):
            start, members = batcher.next_batch(arrivals, first, free_at)
            seconds = run_batch(members)
            if seconds < 0:
                raise ValueError("run_batch returned a negative duration.")
            free_at = start + seconds
            served.extend(Served(index, arrivals[index], start, free_at, len(members)) for index in members)
            first += len(members)
            bar.update(len(members))
    return served


def server_metrics(served: Sequence[Served], tokens_per_request: int) -> dict:
    """Throughput (generated tokens per second of simulated time), latency percentiles and batch sizes."""
    if not served:
        raise ValueError("No served requests to summarise.")
    from .metrics import percentile

    latencies = [item.latency_s for item in served]
    span = max(item.finish_s for item in served) - min(item.arrival_s for item in served)
    batches = {(item.start_s, item.finish_s): item.batch_size for item in served}

    return {
        "requests": len(served),
        "throughput_tokens_per_s": len(served) * tokens_per_request / span,
        "latency_p50_s": statistics.median(latencies),
        "latency_p95_s": percentile(latencies, 95),
        "batches": len(batches),
        "mean_batch_size": statistics.mean(batches.values()),
        "span_s": span,
    }


def model_batch_runner(model, tokenizer, prompts: Sequence[str], new_tokens: int) -> Callable[[list[int]], float]:
    """A ``run_batch`` callback that generates ``new_tokens`` for the given prompt indices and returns the seconds."""
    from .generation import generate_greedy

    def run_batch(indices: list[int]) -> float:
        start = time.perf_counter()
        generate_greedy(model, tokenizer, [prompts[index] for index in indices], new_tokens, exact_length=True)
        return time.perf_counter() - start

    return run_batch


def plot_batching(sweep: Sequence[dict], title: str = "Static batching: throughput vs batch size"):
    """Throughput (tokens/s) against batch size, with the ideal linear scaling from batch 1 for reference."""
    from .plots import pyplot

    plt = pyplot()
    sizes = [row["batch_size"] for row in sweep]
    speeds = [row["tokens_per_s"] for row in sweep]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot(sizes, speeds, marker="o", label="measured")
    errors = [[row["tokens_per_s"] - row["tokens_per_s_min"] for row in sweep],
              [row["tokens_per_s_max"] - row["tokens_per_s"] for row in sweep]]
    axis.errorbar(sizes, speeds, yerr=errors, fmt="none", ecolor="#4C72B0", alpha=0.5)
    axis.plot(sizes, [speeds[0] * size / sizes[0] for size in sizes], linestyle=":", color="grey",
              label="linear scaling from batch 1")
    axis.set_xscale("log", base=2)
    axis.set_xticks(sizes, [str(size) for size in sizes])
    axis.set_ylim(0, max(speeds) * 1.3)
    axis.set_xlabel("batch size (sequences decoded together)")
    axis.set_ylabel("generated tokens / s")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_server_timeline(runs: dict[str, Sequence[Served]], title: str = "Simulated server: latency per request"):
    """Latency of each request against its arrival time, one series per server."""
    from .plots import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for name, served in runs.items():
        ordered = sorted(served, key=lambda item: item.arrival_s)
        axis.plot([item.arrival_s for item in ordered], [item.latency_s for item in ordered], marker=".", label=name)
    axis.set_xlabel("arrival time (s, simulated)")
    axis.set_ylabel("latency (s)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
