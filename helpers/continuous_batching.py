"""Continuous (iteration-level) batching, written by hand over a causal LM's forward pass and KV cache.

A request-level batcher (static or dynamic) starts a batch and runs it until its
*longest* member is done: a request that wanted 8 tokens keeps its batch slot while
a neighbour generates 96, and requests that arrive meanwhile wait outside. An
*iteration-level* scheduler decides again at every decoding step: a sequence that is
finished leaves the batch at once, and a request that has arrived takes the free slot
at the next step (its prompt is prefilled, then it decodes together with the others).

All three schedulers here share one engine and one interface, so they can serve the
same request stream (:func:`request_stream`) and be compared step for step:

- :func:`static_batching` — wait until ``batch_size`` requests are queued, run them to the longest;
- :func:`dynamic_batching` — request-level batching with a maximum wait (the rule of
  :class:`helpers.batching.DynamicBatcher`);
- :func:`continuous_batching` — iteration-level scheduling.

**The engine.** The running batch is one padded KV cache (a transformers
``DynamicCache``) plus a 0/1 attention mask: sequences of different lengths are
*left*-padded, so every row's newest token sits in the last column. Each row's
position ids count only its real tokens, so rotary positions match an unbatched run.
A join pads the shorter of (batch, newcomers) on the left and concatenates rows; a
leave keeps the other rows and drops padding columns no row needs any more.
Decoding is greedy, so every request's tokens must equal its unbatched greedy decode
(:func:`greedy_reference`); the unit tests check exactly that.

**Time.** Arrival times are seconds on a virtual clock. Each forward pass, and each cache
rebuild when rows join or leave, advances it by its measured duration (or, for forward
passes, by ``step_cost_s`` when given: deterministic, for tests
and for counting in steps); when nothing is running and nobody is waiting, the clock
jumps to the next arrival instead of sleeping.

**Steps and slot utilisation.** A *step* produces one token for every occupied slot
(the prefill of a newcomer produces its first token; it joins the batched decode from
the next step). The slot timeline records which request holds each of ``batch_size``
slots at every step; slot utilisation = useful tokens / (slots x steps). Static
batching holds a finished member's slot until the longest member is done; those slot
steps are counted as held but not useful.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Sequence

from . import config
from .batching import DynamicBatcher, poisson_arrivals
from .generation import forward_argument_names


# --- requests and results -------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One request of a stream: when it arrives, its prompt token ids and how many tokens it wants."""

    index: int
    arrival_s: float
    prompt_ids: tuple[int, ...]
    max_new_tokens: int


@dataclass
class Completed:
    """What a scheduler delivered for one request (times on the virtual clock, steps counted from 0)."""

    index: int
    arrival_s: float
    first_token_s: float
    finish_s: float
    tokens: list[int]
    first_step: int  # step that produced the first token
    last_step: int  # step that produced the last useful token

    @property
    def time_to_first_token_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def latency_s(self) -> float:
        """From arrival to the complete answer."""
        return self.finish_s - self.arrival_s


@dataclass
class ScheduleResult:
    """The outcome of serving a stream: per-request results, the slot timeline and the step count."""

    name: str
    batch_size: int
    completed: list[Completed]  # in request-index order
    timeline: list[list[int | None]] = field(repr=False)  # timeline[step][slot] = request index or None
    busy_s: float  # clock time spent in forward passes and cache copies
    copy_s: float = 0.0  # part of busy_s spent rebuilding the cache when rows join or leave

    @property
    def steps(self) -> int:
        return len(self.timeline)

    @property
    def useful_tokens(self) -> int:
        return sum(len(item.tokens) for item in self.completed)

    @property
    def slot_utilization(self) -> float:
        """Useful tokens / (batch slots x steps): 1.0 means no slot ever idled or waited."""
        return self.useful_tokens / (self.batch_size * self.steps) if self.steps else 0.0

    def metrics(self) -> dict:
        """Throughput (tokens per second of virtual time), latency and time-to-first-token percentiles."""
        from .metrics import percentile

        latencies = [item.latency_s for item in self.completed]
        first_tokens = [item.time_to_first_token_s for item in self.completed]
        span = max(item.finish_s for item in self.completed) - min(item.arrival_s for item in self.completed)
        return {"scheduler": self.name, "requests": len(self.completed), "tokens": self.useful_tokens,
                "steps": self.steps, "slot_utilization": self.slot_utilization,
                "throughput_tokens_per_s": self.useful_tokens / span, "span_s": span, "busy_s": self.busy_s,
                "copy_s": self.copy_s,
                "latency_p50_s": statistics.median(latencies), "latency_p95_s": percentile(latencies, 95),
                "ttft_p50_s": statistics.median(first_tokens), "ttft_p95_s": percentile(first_tokens, 95)}


def request_stream(prompts_ids: Sequence[Sequence[int]], count: int, rate_per_s: float,
                   output_lengths: Sequence[int], seed: int = 0) -> list[Request]:
    """``count`` requests with Poisson arrivals (``rate_per_s``, seeded); prompts are taken in turn
    from ``prompts_ids`` and each request's ``max_new_tokens`` is drawn from ``output_lengths``."""
    if not prompts_ids or not output_lengths or min(output_lengths) < 1:
        raise ValueError("Pass at least one prompt and positive output lengths.")
    arrivals = poisson_arrivals(count, rate_per_s, seed=seed)
    generator = random.Random(seed + 1)
    return [Request(i, arrival, tuple(prompts_ids[i % len(prompts_ids)]), generator.choice(list(output_lengths)))
            for i, arrival in enumerate(arrivals)]


def stream_sizes() -> dict:
    """Batch size, requests per stream and number of streams of the continuous-batching comparison."""
    chosen = config.profile()
    return {"batch_size": chosen.continuous_batch_size, "requests": chosen.continuous_requests,
            "streams": chosen.continuous_streams}


def answer_lengths(tokenizer, answers: Sequence[str], low: int = 8, high: int = 96) -> list[int]:
    """Token counts of reference answers, clipped to ``[low, high]``: the output lengths a stream draws from."""
    return [min(max(len(tokenizer(text, add_special_tokens=False).input_ids), low), high) for text in answers]


# --- the engine: one padded batch, its KV cache and attention mask ------------------------------

def _cache_tensors(cache) -> list[tuple]:
    """Per-layer (keys, values), each (batch, kv_heads, length, head_dim), across transformers versions."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _cache_from(tensors: list[tuple]):
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (keys, values) in enumerate(tensors):
        cache.update(keys, values, layer)
    return cache


def _left_pad(tensor, length: int, dim: int):
    import torch.nn.functional as F

    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    padding = [0, 0] * (tensor.dim() - 1 - dim) + [missing, 0]  # F.pad lists the last dimension first
    return F.pad(tensor, padding)


@dataclass
class _Batch:
    cache: object  # DynamicCache holding every row's keys and values
    mask: object  # (rows, length) 1 for a real token, 0 for left padding
    last: object  # (rows,) the newest token of each row, fed at the next step


def _forward(model, input_ids, mask, positions, cache):
    import torch

    cache_argument, keep_argument = forward_argument_names(model)
    options = {cache_argument: cache, "use_cache": True}
    if keep_argument:
        options[keep_argument] = 1  # logits of the last position only
    with torch.no_grad():
        output = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, **options)
    new_cache = getattr(output, "cache", None)  # renamed from past_key_values in transformers 5
    return output.logits[:, -1].argmax(-1), new_cache if new_cache is not None else output.past_key_values


def prefill(model, prompts: Sequence[Sequence[int]]) -> tuple[_Batch, list[int]]:
    """Run the prompts (left-padded into one batch) and return the new batch and each first token."""
    import torch

    device = config.module_device(model)
    length = max(len(prompt) for prompt in prompts)
    ids = torch.zeros((len(prompts), length), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt):] = torch.tensor(prompt, device=device)
        mask[row, length - len(prompt):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    from transformers import DynamicCache

    tokens, cache = _forward(model, ids, mask, positions, DynamicCache())
    return _Batch(cache, mask, tokens), tokens.tolist()


def decode_step(model, batch: _Batch) -> list[int]:
    """One greedy token for every row of ``batch`` (its cache and mask grow by one column)."""
    import torch

    mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
    positions = batch.mask.sum(-1, keepdim=True)  # real tokens so far = position of the new one
    batch.last, batch.cache = _forward(model, batch.last[:, None], mask, positions, batch.cache)
    batch.mask = mask
    return batch.last.tolist()


def merge(first: _Batch, second: _Batch) -> _Batch:
    """One batch holding the rows of ``first`` then those of ``second`` (the shorter one left-padded)."""
    import torch

    length = max(first.mask.shape[1], second.mask.shape[1])
    tensors = [tuple(torch.cat([_left_pad(a, length, 2), _left_pad(b, length, 2)]) for a, b in zip(pair_a, pair_b))
               for pair_a, pair_b in zip(_cache_tensors(first.cache), _cache_tensors(second.cache))]
    mask = torch.cat([_left_pad(first.mask, length, 1), _left_pad(second.mask, length, 1)])
    return _Batch(_cache_from(tensors), mask, torch.cat([first.last, second.last]))


def keep_rows(batch: _Batch, rows: Sequence[int]) -> _Batch | None:
    """The batch with only ``rows`` (``None`` when empty), minus padding columns no kept row needs."""
    import torch

    if not rows:
        return None
    index = torch.tensor(list(rows), device=batch.mask.device)
    mask = batch.mask.index_select(0, index)
    start = int((mask.sum(0) > 0).nonzero()[0])  # first column some kept row really uses
    tensors = [tuple(t.index_select(0, index)[:, :, start:] for t in pair) for pair in _cache_tensors(batch.cache)]
    return _Batch(_cache_from(tensors), mask[:, start:], batch.last.index_select(0, index))


class _Clock:
    """Virtual time: forward passes advance it by their measured (or fixed) cost; idle time is skipped."""

    def __init__(self, model, step_cost_s: float | None):
        self.now, self.busy_s, self.copy_s, self.model, self.step_cost_s = 0.0, 0.0, 0.0, model, step_cost_s

    def run(self, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        if self.step_cost_s is None:
            config.synchronize(config.module_device(self.model))
        cost = self.step_cost_s if self.step_cost_s is not None else time.perf_counter() - start
        self.now += cost
        self.busy_s += cost
        return value

    def copy(self, fn, *args):
        """Run a cache rebuild (rows joining or leaving): its measured time counts, but it is not a step,
        so with a fixed ``step_cost_s`` it costs nothing."""
        start = time.perf_counter()
        value = fn(*args)
        cost = 0.0 if self.step_cost_s is not None else time.perf_counter() - start
        self.now += cost
        self.busy_s += cost
        self.copy_s += cost
        return value


def _finished(tokens: list[int], request: Request, eos_token_id: int | None) -> bool:
    return len(tokens) >= request.max_new_tokens or (eos_token_id is not None and tokens[-1] == eos_token_id)


# --- the iteration-level scheduler ---------------------------------------------------------------

def continuous_batching(model, requests: Sequence[Request], batch_size: int, eos_token_id: int | None = None,
                        step_cost_s: float | None = None, admit=None, on_finish=None) -> ScheduleResult:
    """Serve ``requests`` with iteration-level scheduling over ``batch_size`` slots (greedy decoding).

    Every step: the running rows decode one token; arrived requests take free slots and are
    prefilled (their first token); finished rows leave before the next step.

    Two optional hooks let a server put a response cache in front: ``admit(request, now_s)`` is
    called when a request's turn for a slot comes and returns False when it was answered
    elsewhere (a cache hit: it never takes a slot and is left out of the result);
    ``on_finish(completed)`` is called as soon as a request's last token is out (store it there).
    """
    clock, waiting = _Clock(model, step_cost_s), sorted(requests, key=lambda r: (r.arrival_s, r.index))
    slots: list[int | None] = [None] * batch_size  # slot -> request index
    rows: list[Request] = []  # batch row -> request (row order is the cache's)
    tokens, first_at, first_step, done, timeline = {}, {}, {}, {}, []
    batch = None
    while waiting or rows:
        if not rows and waiting[0].arrival_s > clock.now:
            clock.now = waiting[0].arrival_s  # idle: skip ahead to the next arrival
        step = len(timeline)
        if rows:  # 1. everyone already running decodes one token
            for request, token in zip(rows, clock.run(decode_step, model, batch)):
                tokens[request.index].append(token)
        joiners = []  # 2. arrived requests take free slots and are prefilled
        while waiting and waiting[0].arrival_s <= clock.now and len(rows) + len(joiners) < batch_size:
            request = waiting.pop(0)
            if admit is None or admit(request, clock.now):
                joiners.append(request)
        if not rows and not joiners:
            continue  # every arrival was answered by ``admit``: no step is run
        if joiners:
            new_batch, first_tokens = clock.run(prefill, model, [r.prompt_ids for r in joiners])
            for request, token in zip(joiners, first_tokens):
                slots[slots.index(None)] = request.index
                tokens[request.index], first_at[request.index], first_step[request.index] = [token], clock.now, step
            batch, rows = (new_batch if batch is None else clock.copy(merge, batch, new_batch)), rows + joiners
        timeline.append(list(slots))
        # 3. finished rows leave at once
        leaving = {r.index for r in rows if _finished(tokens[r.index], r, eos_token_id)}
        for request in (r for r in rows if r.index in leaving):
            slots[slots.index(request.index)] = None
            done[request.index] = Completed(request.index, request.arrival_s, first_at[request.index], clock.now,
                                            tokens[request.index], first_step[request.index], step)
            if on_finish is not None:
                on_finish(done[request.index])
        if leaving:
            batch = clock.copy(keep_rows, batch, [row for row, r in enumerate(rows) if r.index not in leaving])
            rows = [r for r in rows if r.index not in leaving]
    return ScheduleResult("continuous", batch_size, [done[i] for i in sorted(done)], timeline, clock.busy_s,
                          clock.copy_s)


# --- request-level batching on the same engine ---------------------------------------------------

def _request_level(name: str, model, requests: Sequence[Request], batcher: DynamicBatcher,
                   eos_token_id: int | None, step_cost_s: float | None) -> ScheduleResult:
    ordered = sorted(requests, key=lambda r: (r.arrival_s, r.index))
    arrivals = [r.arrival_s for r in ordered]
    clock, done, timeline, first = _Clock(model, step_cost_s), {}, [], 0
    while first < len(ordered):
        start, members = batcher.next_batch(arrivals, first, clock.now)
        if math.isinf(start):  # static batching at the end of the stream: the last batch is smaller
            start, members = max(clock.now, arrivals[-1]), list(range(first, len(ordered)))
        clock.now, group, first = start, [ordered[i] for i in members], first + len(members)
        batch, first_tokens = clock.run(prefill, model, [r.prompt_ids for r in group])
        tokens = {r.index: [token] for r, token in zip(group, first_tokens)}
        first_at, first_step, last_step = clock.now, len(timeline), {r.index: len(timeline) for r in group}
        live = {r.index for r in group if not _finished(tokens[r.index], r, eos_token_id)}
        timeline.append([r.index for r in group] + [None] * (batcher.max_batch - len(group)))
        while live:  # run to the longest member; finished members keep their slot, their tokens are dropped
            for request, token in zip(group, clock.run(decode_step, model, batch)):
                if request.index in live:
                    tokens[request.index].append(token)
                    last_step[request.index] = len(timeline)
                    if _finished(tokens[request.index], request, eos_token_id):
                        live.discard(request.index)
            timeline.append(timeline[-1])
        for request in group:  # the batch answers all its members together
            done[request.index] = Completed(request.index, request.arrival_s, first_at, clock.now,
                                            tokens[request.index], first_step, last_step[request.index])
    return ScheduleResult(name, batcher.max_batch, [done[i] for i in sorted(done)], timeline, clock.busy_s)


def static_batching(model, requests: Sequence[Request], batch_size: int, eos_token_id: int | None = None,
                    step_cost_s: float | None = None) -> ScheduleResult:
    """Wait until ``batch_size`` requests are queued (the last batch takes what is left), run each batch
    to its longest member, answer all members together."""
    return _request_level("static", model, requests, DynamicBatcher(batch_size, math.inf), eos_token_id,
                          step_cost_s)


def dynamic_batching(model, requests: Sequence[Request], batch_size: int, max_wait_ms: float,
                     eos_token_id: int | None = None, step_cost_s: float | None = None) -> ScheduleResult:
    """Request-level dynamic batching: a batch leaves when ``batch_size`` requests wait or the oldest has
    waited ``max_wait_ms``; it then runs to its longest member."""
    return _request_level("dynamic", model, requests, DynamicBatcher(batch_size, max_wait_ms), eos_token_id,
                          step_cost_s)


# --- reference and picture -------------------------------------------------------------------------

def greedy_reference(model, prompt_ids: Sequence[int], max_new_tokens: int,
                     eos_token_id: int | None = None) -> list[int]:
    """The unbatched greedy decode of one prompt with ``model.generate`` (what every scheduler must match)."""
    import torch

    ids = torch.tensor([list(prompt_ids)], device=config.module_device(model))
    options = dict(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                   pad_token_id=eos_token_id if eos_token_id is not None else 0)
    if eos_token_id is None:  # run to max_new_tokens whatever the model emits
        options["min_new_tokens"] = max_new_tokens
    with torch.no_grad():
        output = model.generate(ids, attention_mask=torch.ones_like(ids), **options)
    return output[0, ids.shape[1]:].tolist()


def first_divergence(model, prompt_ids: Sequence[int], expected: Sequence[int], got: Sequence[int]) -> dict | None:
    """Where ``got`` first departs from the unbatched decode ``expected``, and how close the call was there.

    Returns ``None`` when one is a prefix of the other. Otherwise the step, both tokens and the
    gap between the two highest logits of the *unbatched* run at that step (prompt plus the tokens
    both agree on): a gap near zero means a near-tie that rounding differences in a batched
    matrix product can flip; a large gap would point to a scheduling bug (a wrong mask or position).
    """
    import torch

    step = next((k for k, (a, b) in enumerate(zip(expected, got)) if a != b), None)
    if step is None:
        return None
    ids = torch.tensor([list(prompt_ids) + list(expected[:step])], device=config.module_device(model))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
    top = torch.topk(logits, 2)
    return {"step": step, "expected": int(expected[step]), "got": int(got[step]),
            "top2_gap": float(top.values[0] - top.values[1]),
            "gap_expected_vs_got": float(logits[expected[step]] - logits[got[step]]),
            "logit_scale": float(logits.abs().max())}


# --- the library: transformers' continuous batching with a paged KV cache -------------------------

def kv_bytes_per_token(model) -> int:
    """KV-cache bytes one token takes across all layers (keys and values, the model's dtype)."""
    settings = model.config.get_text_config()
    head_dim = getattr(settings, "head_dim", None) or settings.hidden_size // settings.num_attention_heads
    kv_heads = getattr(settings, "num_key_value_heads", None) or settings.num_attention_heads
    element = next(model.parameters()).element_size()
    return 2 * settings.num_hidden_layers * kv_heads * head_dim * element


def library_continuous_batching(model, requests: Sequence[Request], batch_size: int, eos_token_id: int | None,
                                page_size: int = 16, num_blocks: int = 256) -> dict:
    """Serve ``requests`` with transformers' continuous batching (``init_continuous_batching``, paged KV cache).

    All requests are queued at once (the library's manager has no notion of our arrival times) with
    their own ``max_new_tokens``; at most ``batch_size`` requests share a step. The manager is warmed
    up before the clock starts. While it runs, the cache's used share is sampled to find the peak
    number of pages in use. Returns the tokens per request (by index), the wall seconds, and the
    paging figures (page size, pages in the cache, peak pages in use).
    """
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    generation_config = GenerationConfig(do_sample=False, max_new_tokens=max(r.max_new_tokens for r in requests),
                                         eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    paging = ContinuousBatchingConfig(page_size=page_size, num_blocks=num_blocks, max_requests_per_batch=batch_size,
                                      max_batch_tokens=batch_size * max(len(r.prompt_ids) for r in requests))
    outputs, peak_used = {}, 0.0
    with model.continuous_batching_context_manager(generation_config=generation_config,
                                                   continuous_batching_config=paging, warmup=True) as manager:
        start = time.perf_counter()
        for request in requests:
            manager.add_request(list(request.prompt_ids), request_id=str(request.index),
                                max_new_tokens=request.max_new_tokens, eos_token_id=eos_token_id)
        while len(outputs) < len(requests):
            output = manager.get_result(timeout=0.02)
            cache = manager.batch_processor.cache
            peak_used = max(peak_used, 1.0 - cache.compute_free_capacity(relative=True))
            if output is not None and output.is_finished():
                if output.error is not None:
                    raise RuntimeError(f"Request {output.request_id} failed in the library: {output.error}")
                outputs[int(output.request_id)] = list(output.generated_tokens)
            elif output is None and not manager.is_running():
                raise RuntimeError("The library's generation thread stopped before all requests finished.")
        seconds = time.perf_counter() - start
    return {"tokens": outputs, "seconds": seconds, "page_size": page_size, "pages": cache.num_blocks,
            "peak_pages_in_use": round(peak_used * cache.num_blocks)}


def paging_waste(prompt_lengths: Sequence[int], output_lengths: Sequence[int], page_size: int,
                 reserved_new_tokens: int) -> dict:
    """Token slots held by a contiguous cache against a paged one for the same requests.

    A contiguous cache reserves ``prompt + reserved_new_tokens`` slots per request when it starts,
    since it cannot know how long the answer will be; a paged cache takes one page of ``page_size``
    slots at a time as tokens arrive, so it holds at most ``page_size - 1`` empty slots per request.
    Returns the used, contiguous and paged slot counts and the wasted share of each.
    """
    if len(prompt_lengths) != len(output_lengths) or page_size < 1:
        raise ValueError("Pass one prompt length per output length and a positive page size.")
    used = sum(p + o for p, o in zip(prompt_lengths, output_lengths))
    contiguous = sum(p + reserved_new_tokens for p in prompt_lengths)
    paged = sum(math.ceil((p + o) / page_size) * page_size for p, o in zip(prompt_lengths, output_lengths))
    return {"used_slots": used, "contiguous_slots": contiguous, "paged_slots": paged,
            "contiguous_waste": 1 - used / contiguous, "paged_waste": 1 - used / paged}


def plot_slot_timeline(result: ScheduleResult, ax=None):
    """Which request holds which slot at each step; a held slot whose request has already finished is hatched."""
    from .plots import pyplot

    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.4 * result.batch_size + 1.2))
    by_index = {item.index: item for item in result.completed}
    colours = plt.get_cmap("tab20")
    for step, slots in enumerate(result.timeline):
        for slot, index in enumerate(slots):
            if index is None:
                continue
            useful = by_index[index].first_step <= step <= by_index[index].last_step
            ax.barh(slot, 1, left=step, color=colours(index % 20), alpha=1.0 if useful else 0.25,
                    hatch=None if useful else "//", edgecolor="none")
    ax.set_xlabel("step")
    ax.set_ylabel("batch slot")
    ax.set_yticks(range(result.batch_size))
    ax.set_title(f"{result.name}: slot utilisation {result.slot_utilization:.0%}")
    return ax
