"""Measurements: timing, quality metrics, generation speed and model size.

Timings are always a median over several runs after a warm-up, reported with
their spread, because a laptop's clock speed and background load move single
runs by tens of percent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from .generation import encode_prompts, generate_greedy


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``runs`` timed calls: median, quartiles, extremes and the raw samples."""

    median_s: float
    min_s: float
    max_s: float
    runs: int
    q1_s: float = float("nan")
    q3_s: float = float("nan")
    samples: tuple = ()

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how noisy the measurement was."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s else 0.0

    @property
    def iqr_s(self) -> tuple[float, float]:
        """Interquartile range (first and third quartile) of the timed calls, in seconds."""
        return (self.q1_s, self.q3_s)


def _timing(seconds: Sequence[float]) -> Timing:
    import numpy as np

    q1, median, q3 = (float(v) for v in np.percentile(seconds, [25, 50, 75]))
    return Timing(median, min(seconds), max(seconds), len(seconds), q1, q3, tuple(seconds))


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1.")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return _timing(seconds)


def measure_alternating(variants: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                        progress: bool = False) -> dict[str, Timing]:
    """Time several variants in alternating rounds (A, B, A, B, ...), so drift hits all alike.

    Each variant gets ``warmup`` untimed calls first, then ``repeats`` rounds each time
    every variant once. Returns ``{name: Timing}``; round ``i`` of every variant is
    ``timing.samples[i]``, which :func:`speedup` pairs.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1.")
    if not variants:
        raise ValueError("Pass at least one variant to time.")
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in tqdm(range(repeats), desc="timing rounds", disable=not progress, leave=False):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: _timing(values) for name, values in seconds.items()}


def speedup(slow: Timing, fast: Timing) -> dict:
    """How many times faster ``fast`` is than ``slow``: the median and IQR of the per-round ratios.

    The two timings must come from :func:`measure_alternating` (same number of rounds),
    so that round ``i`` of each ran side by side. Returns ``value``, ``interval``
    (first and third quartile of the per-round ratios) and ``n`` (rounds).
    """
    import numpy as np

    if len(slow.samples) != len(fast.samples) or not slow.samples:
        raise ValueError("speedup needs two timings with the same number of rounds (use measure_alternating).")
    ratios = np.asarray(slow.samples) / np.asarray(fast.samples)
    q1, median, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
    return {"value": median, "interval": (q1, q3), "n": len(ratios), "kind": "IQR"}


# --- uncertainty --------------------------------------------------------------------------------

def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (95 % by default)."""
    from statistics import NormalDist

    if n <= 0:
        raise ValueError("A proportion needs n >= 1 trials.")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}.")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def proportion(flags: Sequence) -> dict:
    """A rate with its Wilson 95 % interval: ``{"value", "interval", "n"}`` from 0/1 (or bool) flags."""
    flags = [bool(flag) for flag in flags]
    if not flags:
        raise ValueError("A proportion of no items is undefined; pass at least one.")
    successes = sum(flags)
    return {"value": successes / len(flags), "interval": wilson_interval(successes, len(flags)), "n": len(flags),
            "kind": "Wilson 95 %"}


def paired_bootstrap(statistic: Callable, *samples: Sequence, resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Percentile bootstrap interval of ``statistic(*samples)`` over paired items.

    ``samples`` are equally long sequences whose ``i``-th entries belong to the same item
    (the same test ticket scored by two systems, say); every resample draws item indices
    once and applies them to all of them, which keeps the pairing. Returns ``value``
    (the statistic on the full data), ``interval`` and ``n``.
    """
    import numpy as np

    arrays = [np.asarray(sample, dtype=float) for sample in samples]
    if not arrays or len({len(array) for array in arrays}) != 1:
        raise ValueError("Pass one or more samples of equal length (one entry per paired item).")
    n = len(arrays[0])
    if n == 0:
        raise ValueError("A bootstrap needs at least one item.")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(resamples, n))
    draws = np.array([statistic(*(array[index] for array in arrays)) for index in indices], dtype=float)
    alpha = (1 - confidence) / 2
    low, high = np.nanpercentile(draws, [100 * alpha, 100 * (1 - alpha)])
    return {"value": float(statistic(*arrays)), "interval": (float(low), float(high)), "n": n,
            "kind": f"bootstrap {confidence:.0%}"}


def accuracy_difference(correct_a: Sequence, correct_b: Sequence, **options) -> dict:
    """Accuracy of A minus accuracy of B on the same items, with a paired bootstrap interval."""
    return paired_bootstrap(lambda a, b: a.mean() - b.mean(), correct_a, correct_b, **options)


def accuracy_ratio(correct_a: Sequence, correct_b: Sequence, **options) -> dict:
    """Accuracy of A divided by accuracy of B on the same items, with a paired bootstrap interval."""
    import numpy as np

    def ratio(a, b):
        return a.mean() / b.mean() if b.mean() > 0 else np.nan

    return paired_bootstrap(ratio, correct_a, correct_b, **options)


def samples_to_decide(value: float, interval: Sequence[float], bound: float, n: int) -> int | None:
    """Rough sample size at which an interval around ``value`` would clear ``bound``.

    Interval widths shrink like 1/sqrt(n): the side of the interval that faces the bound
    must shrink to the gap between value and bound. Always more than ``n`` (an interval
    that straddles the bound needs more data); None when the value sits on the bound.
    """
    gap = abs(value - bound)
    facing = (interval[1] - value) if bound > value else (value - interval[0])
    if gap == 0 or not math.isfinite(gap) or not math.isfinite(facing) or n < 1:
        return None
    return max(n + 1, math.ceil(n * (facing / gap) ** 2))


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Fraction of positions where prediction equals reference."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references.")
    if not references:
        raise ValueError("accuracy of an empty list is undefined; pass at least one example.")
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def recall_at_k(ranked_ids: Sequence[Sequence], relevant_ids: Sequence, k: int) -> float:
    """Fraction of queries whose relevant id is among the first ``k`` ranked ids."""
    if k < 1:
        raise ValueError("k must be at least 1.")
    if len(ranked_ids) != len(relevant_ids):
        raise ValueError(f"{len(ranked_ids)} rankings but {len(relevant_ids)} relevant ids.")
    if not relevant_ids:
        raise ValueError("recall of an empty query set is undefined.")
    return sum(relevant in list(ranked)[:k] for ranked, relevant in zip(ranked_ids, relevant_ids)) / len(relevant_ids)


def scoring_windows(n_tokens: int, max_length: int = 256, stride: int | None = None):
    """Windows ``(begin, end, first_target)`` that score tokens ``1 .. n_tokens-1`` exactly once each.

    Each window holds at most ``max_length`` tokens and scores the targets
    ``first_target .. end-1`` (token ``j`` is predicted from everything in the window
    before it); consecutive windows advance by ``stride`` targets (default: half a
    window), so every target after the first window sees at least
    ``max_length - stride`` tokens of context. Token 0 (the document start marker) is
    context only.
    """
    stride = stride or max_length // 2
    if max_length < 2 or not 0 < stride < max_length:
        raise ValueError("Need max_length >= 2 and 0 < stride < max_length (each target needs context).")
    windows = []
    first_target = 1
    while first_target < n_tokens:
        end = min(n_tokens, first_target + stride if windows else max_length)
        windows.append((max(0, end - max_length), end, first_target))
        first_target = end
    return windows


def document_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` behind a start-of-document token, so its first word is scored too.

    Uses the tokenizer's BOS token, or its EOS token (the usual document separator)
    when it has no BOS.
    """
    start = getattr(tokenizer, "bos_token_id", None)
    start = getattr(tokenizer, "eos_token_id", None) if start is None else start
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if start is None:
        raise ValueError("The tokenizer has neither a BOS nor an EOS token to start a document with.")
    return [start] + list(ids)


def token_nlls(model, tokenizer, texts: Sequence[str], max_length: int = 256, stride: int | None = None,
               progress: bool = True) -> list:
    """Negative log-likelihood (nats) of every token of every text, one float array per text.

    Windows come from :func:`scoring_windows`; each document starts with a BOS token
    (:func:`document_ids`), so every real token is scored exactly once.
    """
    import numpy as np
    import torch

    device = next(model.parameters()).device
    per_text = []
    for text in tqdm(texts, desc="perplexity", disable=not progress, leave=False):
        ids = document_ids(tokenizer, text)
        nlls = []
        for begin, end, first_target in scoring_windows(len(ids), max_length, stride):
            window = torch.tensor([ids[begin:end]], device=device)
            with torch.no_grad():
                logits = model(window).logits[0].float()
            predicted = logits[first_target - begin - 1: end - begin - 1]
            targets = window[0, first_target - begin:]
            nlls.append(torch.nn.functional.cross_entropy(predicted, targets, reduction="none").cpu().numpy())
        per_text.append(np.concatenate(nlls) if nlls else np.zeros(0))
    return per_text


def perplexity_from_nlls(nlls: Sequence) -> float:
    """exp(mean NLL) over every token of every text."""
    import numpy as np

    flat = np.concatenate([np.asarray(values, dtype=float) for values in nlls]) if len(nlls) else np.zeros(0)
    if flat.size == 0:
        raise ValueError("No tokens to score: pass non-empty texts.")
    return math.exp(float(flat.mean()))


def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 256, stride: int | None = None,
               progress: bool = True) -> float:
    """Perplexity of ``model`` on ``texts``: every token scored once with sliding windows (:func:`token_nlls`)."""
    return perplexity_from_nlls(token_nlls(model, tokenizer, texts, max_length, stride, progress))


def perplexity_ratio(nlls_a: Sequence, nlls_b: Sequence, block_tokens: int = 64, **options) -> dict:
    """Perplexity of A divided by perplexity of B on the same tokens, with a paired block bootstrap.

    Neighbouring tokens are not independent, so the resampled unit is a block of
    ``block_tokens`` consecutive tokens (the same block for A and B). Returns
    ``value``, ``interval`` (95 %) and ``n`` (blocks).
    """
    import numpy as np

    flat_a = np.concatenate([np.asarray(v, dtype=float) for v in nlls_a])
    flat_b = np.concatenate([np.asarray(v, dtype=float) for v in nlls_b])
    if flat_a.shape != flat_b.shape or flat_a.size == 0:
        raise ValueError("Pass per-token NLLs of the same texts for both models (equal, non-zero lengths).")
    starts = range(0, flat_a.size, block_tokens)
    sums_a = np.array([flat_a[s:s + block_tokens].sum() for s in starts])
    sums_b = np.array([flat_b[s:s + block_tokens].sum() for s in starts])
    counts = np.array([min(block_tokens, flat_a.size - s) for s in starts], dtype=float)
    result = paired_bootstrap(lambda a, b, c: math.exp((a.sum() - b.sum()) / c.sum()), sums_a, sums_b, counts,
                              **options)
    result["kind"] = f"block bootstrap ({block_tokens} tokens)"
    return result


def generation_speed(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 1,
                     use_cache: bool = True, repeats: int = 3, warmup: int = 1) -> dict:
    """Decode speed for greedy generation of exactly ``max_new_tokens`` per prompt.

    All ``prompts`` are processed in batches of ``batch_size``; one pass over them
    is timed ``repeats`` times after ``warmup`` passes. Returns tokens per second
    (median, min, max), the median latency per batch and the counts behind them.
    """
    if not prompts:
        raise ValueError("Pass at least one prompt.")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1.")
    batches = [list(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]

    def one_pass():
        for batch in batches:
            generate_greedy(model, tokenizer, batch, max_new_tokens, use_cache=use_cache, exact_length=True)

    timing = measure(one_pass, repeats=repeats, warmup=warmup)
    new_tokens = max_new_tokens * len(prompts)
    return {
        "tokens_per_s": new_tokens / timing.median_s,
        "tokens_per_s_min": new_tokens / timing.max_s,
        "tokens_per_s_max": new_tokens / timing.min_s,
        "tokens_per_s_iqr": (new_tokens / timing.q3_s, new_tokens / timing.q1_s),
        "latency_s": timing.median_s / len(batches),
        "new_tokens": new_tokens,
        "batch_size": batch_size,
        "runs": timing.runs,
        "timing": timing,
    }


def prefill_and_decode(model, tokenizer, prompt: str, new_tokens: int, repeats: int = 5, warmup: int = 1) -> dict:
    """Split one greedy generation into time to first token (prefill) and decode speed after it.

    Alternates rounds of "generate 1 token" and "generate ``new_tokens`` tokens" from the
    same prompt. Time to first token is the 1-token run (tokenize, prefill the prompt, pick
    one token); decode speed is ``(new_tokens - 1) / (full - first)`` per round. Returns
    medians with interquartile ranges over the rounds.
    """
    import numpy as np

    if new_tokens < 2:
        raise ValueError("new_tokens must be at least 2 to have a decode phase after the first token.")
    timings = measure_alternating({
        "first": lambda: generate_greedy(model, tokenizer, [prompt], 1, exact_length=True),
        "full": lambda: generate_greedy(model, tokenizer, [prompt], new_tokens, exact_length=True),
    }, repeats=repeats, warmup=warmup)
    first = np.asarray(timings["first"].samples)
    full = np.asarray(timings["full"].samples)
    decode_rates = (new_tokens - 1) / np.maximum(full - first, 1e-9)
    q1, median, q3 = (float(v) for v in np.percentile(decode_rates, [25, 50, 75]))
    return {
        "ttft_s": timings["first"].median_s,
        "ttft_s_iqr": timings["first"].iqr_s,
        "decode_tokens_per_s": median,
        "decode_tokens_per_s_iqr": (q1, q3),
        "prompt_tokens": len(encode_prompts(tokenizer, [prompt]).input_ids[0]),
        "new_tokens": new_tokens,
        "runs": repeats,
    }


def _quant_state_tensors(state) -> list:
    """Tensors inside a bitsandbytes 4-bit quant state (absmax, code, nested state)."""
    import torch

    found = []
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif value is not None and hasattr(value, "absmax"):
            found.extend(_quant_state_tensors(value))
    return found


def _packed_tensors(module) -> list:
    """Weight and bias held inside a PyTorch dynamic-quantized layer's packed parameters."""
    packed = getattr(module, "_packed_params", None)
    if packed is None or not hasattr(packed, "_weight_bias"):
        return []
    weight, bias = packed._weight_bias()
    return [tensor for tensor in (weight, bias) if tensor is not None]


def _tensor_bytes(tensor) -> int:
    """Bytes of a tensor; for a torch quantized tensor, also its per-channel scales and zero points."""
    import torch

    size = tensor.numel() * tensor.element_size()
    if tensor.is_quantized and tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        size += tensor.q_per_channel_scales().numel() * 8 + tensor.q_per_channel_zero_points().numel() * 8
    elif tensor.is_quantized:
        size += 16  # one scale and one zero point
    return size


def model_bytes(model) -> int:
    """Bytes a model holds in memory, whatever the format; shared (tied) tensors count once.

    Counts parameters and buffers; bitsandbytes 4-bit scales (``quant_state``: block
    scales, code table, nested scales; the weights are packed two per byte in uint8);
    LLM.int8 row scales (``SCB``), which move from the weight to ``module.state`` at the
    first forward pass; and the packed int8 weights of PyTorch dynamic-quantized layers,
    which are neither parameters nor buffers.
    """
    import torch

    seen: set[tuple[int, int]] = set()
    total = 0

    def add(tensor) -> None:
        nonlocal total
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            return
        seen.add(key)
        total += _tensor_bytes(tensor)

    for tensor in list(model.parameters()) + list(model.buffers()):
        add(tensor)
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            for extra in _quant_state_tensors(state):
                add(extra)
        add(getattr(tensor, "SCB", None))  # LLM.int8 row scales
    for module in model.modules():
        matmul_state = getattr(module, "state", None)
        add(getattr(matmul_state, "SCB", None))
        add(getattr(matmul_state, "CB", None))  # the int8 weight itself: already counted, shares storage
        # unpacking makes fresh copies (whose addresses get reused), so count them without de-duplication
        total += sum(_tensor_bytes(tensor) for tensor in _packed_tensors(module))
    return total


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``: ``numpy.percentile`` (linear interpolation
    between order statistics), with a clear error for no values or ``q`` outside 0..100."""
    import numpy as np

    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q}.")
    if len(values) == 0:
        raise ValueError("The percentile of no values is undefined; pass at least one value.")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def parameter_count(model) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    seen, total = set(), 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total
