"""A bounded HTTP load-test client (asyncio + httpx) and its statistics.

:func:`run_load` sends a fixed list of JSON payloads to a URL, either with a
fixed number of requests in flight (``concurrency``, a closed loop: a new
request leaves when one returns) or at a fixed arrival rate (``rate_per_s``, an
open loop: requests keep arriving whatever the server does, as real users do).
No request starts after ``time_limit_s``; requests already in flight get
``grace_s`` more to finish, so the whole test ends by itself within
``time_limit_s + grace_s``. Every request ends as one of:

- **answered**: HTTP 200;
- **shed**: the server's backpressure refused it at once: HTTP 503 (or 429) whose body
  says so (Ray Serve's "Request dropped due to backpressure" or the app's own
  ``"shed": true``);
- **failed**: anything else: other status codes, a 503 for any other reason (Serve also
  answers 503 when a deployment is unavailable: that is an outage, not load shedding),
  timeouts, connection errors, or a request still unanswered when the grace period ran out.

Requests never sent because the time limit came first are counted as
**unsent**: they say the test was too short, not that the server failed. :func:`summarize` turns
the outcomes into throughput and latency percentiles; it is a pure function.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from .metrics import percentile  # noqa: F401  (re-exported: summarize() and callers use loadtest.percentile)

SHED_STATUSES = (503, 429)


@dataclass(frozen=True)
class Outcome:
    """What happened to one request."""

    kind: str  # "answered" | "shed" | "failed"
    latency_s: float
    status: int | None = None
    detail: str = ""
    replica: str | None = None
    sent_at_s: float = 0.0  # seconds after the test started
    server_s: float | None = None  # time the server says it spent on the request (its "seconds" field)
    batch_size: int | None = None  # requests the server generated together with this one (its "batch_size")


@dataclass(frozen=True)
class LoadReport:
    """Counts, throughput and latency of one load test (latencies of answered requests only)."""

    requests: int
    answered: int
    shed: int
    failed: int
    unsent: int
    duration_s: float
    throughput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    shed_p50_ms: float | None
    server_p50_ms: float | None  # median time spent generating, as reported by the server
    mean_batch_size: float | None = None  # mean "batch_size" the server reported for answered requests
    status_counts: dict = field(default_factory=dict)
    replica_counts: dict = field(default_factory=dict)
    failure_examples: tuple = ()

    def row(self, name: str) -> dict:
        """One table row for printing side by side with other runs."""
        return {"run": name, "answered": self.answered, "shed": self.shed, "failed": self.failed,
                "unsent": self.unsent, "seconds": round(self.duration_s, 1),
                "answered/s": round(self.throughput_rps, 2), "p50 ms": _round(self.p50_ms),
                "p95 ms": _round(self.p95_ms), "p99 ms": _round(self.p99_ms)}

    def __str__(self) -> str:
        text = (f"{self.requests} requests in {self.duration_s:.1f} s: {self.answered} answered, {self.shed} shed, "
                f"{self.failed} failed, {self.unsent} unsent · {self.throughput_rps:.2f} answered/s")
        if self.p50_ms is not None:
            text += f" · latency p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms, p99 {self.p99_ms:.0f} ms"
        return text


def _round(value):
    return None if value is None else round(value)


def is_backpressure(body_text: str) -> bool:
    """True when a refusal's body says backpressure shed it (Serve's message or the app's ``"shed": true``)."""
    text = (body_text or "").lower()
    return "backpressure" in text or '"shed": true' in text or '"shed":true' in text


def classify(status: int | None, body_text: str = "") -> str:
    """``answered`` for 200; ``shed`` for a 503/429 whose body says backpressure; else ``failed``.

    ``None`` means no response at all. A 503 without the backpressure message (a deployment
    that is down, a proxy with no replica) is a failure, not shedding.
    """
    if status == 200:
        return "answered"
    if status in SHED_STATUSES and is_backpressure(body_text):
        return "shed"
    return "failed"


def summarize(outcomes: Sequence[Outcome], duration_s: float, unsent: int = 0) -> LoadReport:
    """Counts, answered requests per second and latency percentiles of a finished test.

    ``duration_s`` is the test's wall time (first send to last reply). Percentiles
    are over answered requests only: a shed request returns fast on purpose and
    would flatter the latency.
    """
    if duration_s < 0:
        raise ValueError("duration_s must be >= 0.")
    kinds = Counter(outcome.kind for outcome in outcomes)
    unexpected = set(kinds) - {"answered", "shed", "failed"}
    if unexpected:
        raise ValueError(f"Unknown outcome kind(s) {sorted(unexpected)}; use answered, shed or failed.")
    answered_ms = [outcome.latency_s * 1000 for outcome in outcomes if outcome.kind == "answered"]
    shed_ms = [outcome.latency_s * 1000 for outcome in outcomes if outcome.kind == "shed"]
    server_ms = [outcome.server_s * 1000 for outcome in outcomes
                 if outcome.kind == "answered" and outcome.server_s is not None]
    batch_sizes = [outcome.batch_size for outcome in outcomes
                   if outcome.kind == "answered" and outcome.batch_size is not None]

    def pick(q, values=answered_ms):
        return percentile(values, q) if values else None

    statuses = Counter("no response" if outcome.status is None else str(outcome.status) for outcome in outcomes)
    replicas = Counter(outcome.replica for outcome in outcomes if outcome.kind == "answered" and outcome.replica)
    failures = tuple(dict.fromkeys(outcome.detail for outcome in outcomes if outcome.kind == "failed"))[:5]
    return LoadReport(
        requests=len(outcomes) + unsent, answered=kinds["answered"], shed=kinds["shed"], failed=kinds["failed"],
        unsent=unsent, duration_s=duration_s,
        throughput_rps=kinds["answered"] / duration_s if duration_s > 0 else 0.0,
        p50_ms=pick(50), p95_ms=pick(95), p99_ms=pick(99),
        mean_ms=sum(answered_ms) / len(answered_ms) if answered_ms else None,
        shed_p50_ms=pick(50, shed_ms), server_p50_ms=pick(50, server_ms),
        mean_batch_size=sum(batch_sizes) / len(batch_sizes) if batch_sizes else None,
        status_counts=dict(sorted(statuses.items())), replica_counts=dict(sorted(replicas.items())),
        failure_examples=failures,
    )


def make_payloads(prompts: Sequence[str], count: int, max_new_tokens: int | None = None) -> list[dict]:
    """``count`` request bodies cycling through ``prompts`` (the same stream for every run)."""
    if not prompts:
        raise ValueError("Pass at least one prompt.")
    if count < 1:
        raise ValueError("count must be at least 1.")
    payloads = []
    for index in range(count):
        body = {"prompt": prompts[index % len(prompts)]}
        if max_new_tokens is not None:
            body["max_new_tokens"] = max_new_tokens
        payloads.append(body)
    return payloads


async def _send(client, url: str, payload: dict, timeout_s: float, started: float) -> Outcome:
    """One POST, timed and classified; never raises for network trouble."""
    import httpx

    sent_at = time.perf_counter()
    try:
        # asyncio's timeout as well as httpx's: it also bounds time spent outside the socket reads
        response = await asyncio.wait_for(client.post(url, json=payload, timeout=timeout_s), timeout_s)
    except (httpx.TimeoutException, asyncio.TimeoutError):
        return Outcome("failed", time.perf_counter() - sent_at, None, f"timeout after {timeout_s:.1f} s",
                       sent_at_s=sent_at - started)
    except httpx.HTTPError as error:
        return Outcome("failed", time.perf_counter() - sent_at, None, f"{type(error).__name__}: {error}"[:200],
                       sent_at_s=sent_at - started)
    latency = time.perf_counter() - sent_at
    kind = classify(response.status_code, response.text)
    replica, detail, server_s, batch_size = None, "", None, None
    try:
        body = response.json()
    except (json.JSONDecodeError, ValueError):
        body = None
    if kind == "answered" and isinstance(body, dict):
        replica = body.get("replica")
        server_s = body.get("seconds") if isinstance(body.get("seconds"), (int, float)) else None
        batch_size = body.get("batch_size") if isinstance(body.get("batch_size"), int) else None
    elif kind != "answered":
        detail = f"HTTP {response.status_code}: " + (body.get("error", "") if isinstance(body, dict)
                                                      else response.text[:120])
    return Outcome(kind, latency, response.status_code, detail, replica, sent_at - started, server_s, batch_size)


async def run_load_async(url: str, payloads: Sequence[dict], concurrency: int | None = None,
                         rate_per_s: float | None = None, time_limit_s: float = 60.0, grace_s: float | None = None,
                         request_timeout_s: float | None = None, progress: bool = True, description: str = "load",
                         transport=None) -> LoadReport:
    """Send ``payloads`` to ``url`` and summarize; see the module docstring.

    Give exactly one of ``concurrency`` (requests in flight) or ``rate_per_s``
    (evenly spaced arrivals). Requests start only before ``time_limit_s``; each
    times out at ``request_timeout_s`` or at ``time_limit_s + grace_s`` (default
    grace: a quarter of the limit, at most 30 s), whichever comes first.
    ``transport`` lets tests plug in ``httpx.MockTransport``.
    """
    import httpx
    from tqdm.auto import tqdm

    if (concurrency is None) == (rate_per_s is None):
        raise ValueError("Give exactly one of concurrency (requests in flight) or rate_per_s (arrivals per second).")
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1.")
    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive.")
    if time_limit_s <= 0:
        raise ValueError("time_limit_s must be positive.")
    if not payloads:
        raise ValueError("Pass at least one payload.")
    grace_s = min(0.25 * time_limit_s, 30.0) if grace_s is None else grace_s
    if grace_s < 0:
        raise ValueError("grace_s must be >= 0.")
    request_timeout_s = request_timeout_s or time_limit_s + grace_s
    in_flight_cap = concurrency or len(payloads)
    limits = httpx.Limits(max_connections=in_flight_cap, max_keepalive_connections=in_flight_cap)
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    deadline = started + time_limit_s  # no request starts after this
    hard_stop = deadline + grace_s  # no request runs after this
    last_reply = [started]
    sent = [0]
    bar = tqdm(total=len(payloads), desc=description, disable=not progress, leave=False)

    def remaining() -> float:
        return deadline - time.perf_counter()

    def finish(outcome: Outcome):
        outcomes.append(outcome)
        last_reply[0] = time.perf_counter()
        bar.update(1)

    async with httpx.AsyncClient(limits=limits, transport=transport) as client:
        async def one(payload):
            if remaining() <= 0:
                return False
            sent[0] += 1
            timeout = min(request_timeout_s, hard_stop - time.perf_counter())
            finish(await _send(client, url, payload, timeout, started))
            return True

        if concurrency is not None:
            queue = list(reversed(payloads))

            async def worker():
                while queue and remaining() > 0:
                    await one(queue.pop())

            tasks = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(payloads)))]
        else:
            async def arrive(index, payload):
                await asyncio.sleep(max(0.0, started + index / rate_per_s - time.perf_counter()))
                await one(payload)

            tasks = [asyncio.create_task(arrive(index, payload)) for index, payload in enumerate(payloads)
                     if index / rate_per_s < time_limit_s]
        # Per-request timeouts already end everything by hard_stop; the extra
        # second only guards against a stuck transport.
        done, pending = await asyncio.wait(tasks, timeout=max(hard_stop - time.perf_counter(), 0) + 1.0)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    bar.close()
    for _ in range(sent[0] - len(outcomes)):  # in flight when the grace period ran out
        outcomes.append(Outcome("failed", time.perf_counter() - started, None, "cut off at the time limit"))
    unsent = len(payloads) - sent[0]
    duration = max(last_reply[0] - started, 1e-9) if outcomes else 0.0
    return summarize(outcomes, duration, unsent=unsent)


def run_load(url: str, payloads: Sequence[dict], **options) -> LoadReport:
    """Blocking wrapper around :func:`run_load_async` that also works inside Jupyter.

    Jupyter already runs an event loop in the main thread, so the test runs in
    its own thread with its own loop there.
    """
    return run_blocking(lambda: run_load_async(url, payloads, **options))


def run_blocking(make_coroutine):
    """Run the coroutine ``make_coroutine()`` to the end and return its result, also inside Jupyter."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    box: dict = {}

    def target():
        try:
            box["result"] = asyncio.run(make_coroutine())
        except BaseException as error:  # re-raised in the caller's thread below
            box["error"] = error

    thread = threading.Thread(target=target, name="load-test")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


# --- streamed chat completions through the official openai client -----------------------------------

@dataclass(frozen=True)
class StreamOutcome:
    """One streamed chat completion, timed on the client as its chunks arrived."""

    ok: bool
    total_s: float
    first_token_s: float | None = None  # time to first token: request sent -> first content chunk
    tokens: int = 0  # completion tokens (the usage block; else the content chunks)
    chunk_times_s: tuple = ()  # arrival of each content chunk, seconds after the request was sent
    detail: str = ""

    @property
    def per_token_s(self) -> float | None:
        """Decode time per token after the first: (last chunk - first chunk) / (tokens - 1)."""
        if not self.ok or self.tokens < 2 or len(self.chunk_times_s) < 2:
            return None
        return (self.chunk_times_s[-1] - self.chunk_times_s[0]) / (self.tokens - 1)


@dataclass(frozen=True)
class StreamReport:
    """Time to first token and per-token latency over the streams of one test."""

    outcomes: tuple
    duration_s: float
    unsent: int = 0

    @property
    def ok(self) -> list:
        return [outcome for outcome in self.outcomes if outcome.ok]

    @property
    def failed(self) -> int:
        return len(self.outcomes) - len(self.ok)

    @property
    def first_token_ms(self) -> list:
        return [outcome.first_token_s * 1000 for outcome in self.ok if outcome.first_token_s is not None]

    @property
    def per_token_ms(self) -> list:
        return [outcome.per_token_s * 1000 for outcome in self.ok if outcome.per_token_s is not None]

    def quartiles(self, values: Sequence[float]) -> tuple | None:
        """(first quartile, median, third quartile), or None without values."""
        return tuple(percentile(values, q) for q in (25, 50, 75)) if values else None

    def __str__(self) -> str:
        text = (f"{len(self.outcomes)} streams in {self.duration_s:.1f} s: {len(self.ok)} complete, "
                f"{self.failed} failed, {self.unsent} unsent")
        first, per_token = self.quartiles(self.first_token_ms), self.quartiles(self.per_token_ms)
        if first:
            text += f" · time to first token p50 {first[1]:.0f} ms (IQR {first[0]:.0f}-{first[2]:.0f})"
        if per_token:
            text += f" · per token p50 {per_token[1]:.0f} ms (IQR {per_token[0]:.0f}-{per_token[2]:.0f})"
        return text


async def _stream_one(client, model: str, prompt: str, max_tokens: int, timeout_s: float) -> StreamOutcome:
    """One streamed chat completion; never raises for a server or network failure."""
    import openai

    sent = time.perf_counter()
    arrivals: list[float] = []
    usage_tokens = [None]

    async def consume():
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.perf_counter() - sent)
            if chunk.usage is not None:
                usage_tokens[0] = chunk.usage.completion_tokens

    try:
        await asyncio.wait_for(consume(), timeout_s)
    except (asyncio.TimeoutError, openai.APITimeoutError):
        return StreamOutcome(False, time.perf_counter() - sent, detail=f"timeout after {timeout_s:.1f} s")
    except openai.OpenAIError as error:
        return StreamOutcome(False, time.perf_counter() - sent, detail=f"{type(error).__name__}: {error}"[:200])
    tokens = usage_tokens[0] if usage_tokens[0] is not None else len(arrivals)
    return StreamOutcome(bool(arrivals), time.perf_counter() - sent, arrivals[0] if arrivals else None, tokens,
                         tuple(arrivals), "" if arrivals else "no content chunk arrived")


async def stream_chats_async(base_url: str, prompts: Sequence[str], concurrency: int, max_tokens: int,
                             time_limit_s: float = 60.0, request_timeout_s: float | None = None,
                             model: str = "workbook-llm", progress: bool = True, description: str = "streams",
                             http_client=None) -> StreamReport:
    """Stream one chat completion per prompt with the official ``openai`` client, ``concurrency`` at a time.

    ``base_url`` is the server's OpenAI base (``http://127.0.0.1:PORT/v1``). Like
    :func:`run_load_async`, no stream starts after ``time_limit_s`` and each one is
    cut at ``request_timeout_s`` (default: the time limit), so the test is bounded.
    """
    from openai import AsyncOpenAI
    from tqdm.auto import tqdm

    if concurrency < 1 or not prompts or time_limit_s <= 0 or max_tokens < 1:
        raise ValueError("Need concurrency >= 1, at least one prompt, a positive time limit and max_tokens >= 1.")
    request_timeout_s = request_timeout_s or time_limit_s
    client = AsyncOpenAI(base_url=base_url, api_key="local-server-needs-no-key", max_retries=0,
                         timeout=request_timeout_s, http_client=http_client)
    queue = list(reversed(prompts))
    outcomes: list[StreamOutcome] = []
    started = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=description, disable=not progress, leave=False)

    async def worker():
        while queue and time.perf_counter() - started < time_limit_s:
            outcomes.append(await _stream_one(client, model, queue.pop(), max_tokens, request_timeout_s))
            bar.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(prompts)))))
    finally:
        bar.close()
        await client.close()
    return StreamReport(tuple(outcomes), time.perf_counter() - started, unsent=len(queue))


def stream_chats(base_url: str, prompts: Sequence[str], concurrency: int, max_tokens: int, **options) -> StreamReport:
    """Blocking :func:`stream_chats_async` (works inside Jupyter too)."""
    return run_blocking(lambda: stream_chats_async(base_url, prompts, concurrency, max_tokens, **options))


# --- who used the CPU during a test ------------------------------------------------------------------

class CpuMeter:
    """CPU seconds used while ``with meter:`` blocks run, by the load client and by each kind of Ray process.

    The client is this Python process (in a notebook: the kernel that runs the load
    test); Ray's processes are grouped by :func:`ray_processes.process_role`. Blocks
    add up, so one meter can cover several rounds. ``share(role, cores)`` is the
    fraction of ``cores`` that role kept busy over the blocks' wall time.
    """

    def __init__(self, snapshot=None):
        from .ray_processes import cpu_seconds_by_process

        self._snapshot = snapshot or cpu_seconds_by_process
        self.seconds: Counter = Counter()
        self.wall_s = 0.0

    def __enter__(self):
        self._start, self._started = self._snapshot(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s += time.perf_counter() - self._started
        for pid, (role, used) in self._snapshot().items():
            before = self._start.get(pid)
            self.seconds[role] += used - (before[1] if before else 0.0)  # a process born during the block: all
        return False

    def share(self, role: str, cores: float) -> float:
        """Fraction of ``cores`` that ``role`` used (0 when nothing was measured)."""
        return self.seconds[role] / (self.wall_s * cores) if self.wall_s > 0 else 0.0


def table(rows: Sequence[dict]) -> str:
    """Rows of :meth:`LoadReport.row` (or any dicts with the same keys) as an aligned text table."""
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[("-" if row.get(column) is None else str(row.get(column))) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) if index == 0 else column.rjust(width)
                       for index, (column, width) in enumerate(zip(columns, widths)))]
    for line in cells:
        lines.append("  ".join(value.ljust(width) if index == 0 else value.rjust(width)
                               for index, (value, width) in enumerate(zip(line, widths))))
    return "\n".join(lines)
