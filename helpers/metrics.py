"""Measurements: timing, quality metrics, generation speed and model size.

Timings are always a median over several runs after a warm-up, reported with
their spread, because a laptop's clock speed and background load move single
runs by tens of percent.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median, fastest and slowest of ``runs`` timed calls."""

    median_s: float
    min_s: float
    max_s: float
    runs: int

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how noisy the measurement was."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s else 0.0


def measure(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> Timing:
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
    return Timing(statistics.median(seconds), min(seconds), max(seconds), repeats)


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


def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 256, stride: int | None = None,
               progress: bool = True) -> float:
    """Perplexity of ``model`` on ``texts`` with a sliding window.

    Each text is cut into windows of ``max_length`` tokens that advance by
    ``stride`` (default: half a window); every token is predicted once, with up to
    ``max_length - stride`` tokens of context carried over from the previous window.
    """
    import torch

    stride = stride or max_length // 2
    if not 0 < stride <= max_length:
        raise ValueError("stride must be in (0, max_length].")
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for text in tqdm(texts, desc="perplexity", disable=not progress, leave=False):
        ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
        seq_len = ids.size(1)
        previous_end = 0
        for begin in range(0, seq_len, stride):
            end = min(begin + max_length, seq_len)
            target_len = end - previous_end
            window = ids[:, begin:end]
            labels = window.clone()
            labels[:, :-target_len] = -100
            with torch.no_grad():
                loss = model(window, labels=labels).loss
            scored = (labels[:, 1:] != -100).sum().item()
            total_nll += loss.float().item() * scored
            total_tokens += scored
            previous_end = end
            if end == seq_len:
                break
    if total_tokens == 0:
        raise ValueError("No tokens to score: pass non-empty texts.")
    return math.exp(total_nll / total_tokens)


def generate_greedy(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, use_cache: bool = True,
                    exact_length: bool = False, chat: bool = True):
    """Greedy generation for a batch of prompts; returns the decoded new text per prompt."""
    import torch

    inputs = encode_prompts(tokenizer, prompts, chat=chat).to(next(model.parameters()).device)
    options = dict(max_new_tokens=max_new_tokens, do_sample=False, use_cache=use_cache,
                   pad_token_id=tokenizer.pad_token_id)
    if exact_length:
        options["min_new_tokens"] = max_new_tokens
    with torch.no_grad():
        output = model.generate(**inputs, **options)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def encode_prompts(tokenizer, prompts: Sequence[str], chat: bool = True):
    """Tokenize prompts (wrapped in the chat template when ``chat``), left-padded for generation."""
    tokenizer.padding_side = "left"
    if chat and getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True) for prompt in prompts]
    else:
        texts = list(prompts)
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)


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
        "latency_s": timing.median_s / len(batches),
        "new_tokens": new_tokens,
        "batch_size": batch_size,
        "runs": timing.runs,
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


def model_bytes(model) -> int:
    """Real bytes held by a model's parameters and buffers.

    Shared (tied) tensors count once. bitsandbytes stores 4-bit weights packed two
    per byte in uint8 and keeps scales beside them; those scales are counted too.
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
        total += tensor.numel() * tensor.element_size()

    for tensor in list(model.parameters()) + list(model.buffers()):
        add(tensor)
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            for extra in _quant_state_tensors(state):
                add(extra)
        add(getattr(tensor, "SCB", None))  # LLM.int8 row scales
    return total


def parameter_count(model) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    seen, total = set(), 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total
