"""Exercise checks for notebook 08 (caching)."""
from __future__ import annotations

import numbers
from typing import Sequence

from ._common import close, need_answer, verdict


def check_08_1(answer) -> bool:
    """KV-cache bytes per token of Llama-2-7B (32 layers, 32 KV heads of 128 dims, fp16)."""
    if need_answer(answer, "Write your answer in bytes per token, e.g. check_08_1(100_000)."):
        return False
    expected = 2 * 32 * 32 * 128 * 2
    return verdict(close(answer, expected, 0.01),
                   f"2 (K and V) x 32 layers x 32 heads x 128 dims x 2 bytes = {expected:,} bytes = 512 KB per token.",
                   "Remember the factor 2: keys and values are both cached, in every layer.")


def check_08_2(answer) -> bool:
    """KV cache of 16 requests x 4,096 tokens for a model with 32 layers, 8 KV heads of 128 dims, fp16."""
    if need_answer(answer, "Write your answer in bytes, e.g. check_08_2(1e9)."):
        return False
    per_token = 2 * 32 * 8 * 128 * 2
    expected = per_token * 4096 * 16
    return verdict(close(answer, expected, 0.01),
                   f"{per_token:,} bytes per token x 4,096 tokens x 16 requests = {expected / 1e9:.2f} GB: "
                   "grouped-query attention (8 KV heads instead of 32) makes it 4x smaller.",
                   "Use the 8 key/value heads, not the attention heads; multiply by tokens and by requests.")


def check_08_3(answer, similarities: Sequence[float], same: Sequence[bool]) -> bool:
    """A threshold that lets no different-meaning pair hit while keeping as many paraphrase hits as possible."""
    if need_answer(answer, "Write a threshold between 0 and 1, e.g. check_08_3(0.9, similarities, same)."):
        return False
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return verdict(False, "", "The threshold must be a number between 0 and 1.")
    near_misses = [s for s, is_same in zip(similarities, same) if not is_same]
    paraphrases = [s for s, is_same in zip(similarities, same) if is_same]
    highest_near_miss = max(near_misses)
    best_recall = sum(s > highest_near_miss for s in paraphrases) / len(paraphrases)
    false_hits = sum(s >= answer for s in near_misses)
    recall = sum(s >= answer for s in paraphrases) / len(paraphrases)
    return verdict(bool(false_hits == 0 and recall == best_recall),
                   f"No near-miss pair reaches {answer:.4f}; {recall:.0%} of paraphrases still hit. That is the "
                   "price of zero false hits with this embedder.",
                   f"At {answer:.4f}: {false_hits} near-miss pairs hit and {recall:.0%} of paraphrases hit. "
                   f"The most similar near-miss pair scores {highest_near_miss:.3f}: go just above it.")
