"""Exercise checks for notebook 07 (sharding)."""
from __future__ import annotations

from ._common import close, need_answer, verdict


def check_07_1(answer) -> bool:
    """Bytes per rank to train a 13 B model with ZeRO-2 on 8 ranks, mixed precision."""
    if need_answer(answer, "Write your answer in bytes, e.g. check_07_1(50e9)."):
        return False
    expected = 13e9 * (2 + (2 + 12) / 8)
    return verdict(close(answer, expected, 0.01),
                   f"ZeRO-2 keeps the 2-byte weights whole (26 GB) and splits gradients and Adam state "
                   f"(14 B/param) 8 ways (22.75 GB): {expected / 1e9:.2f} GB per rank.",
                   "ZeRO-2 shards gradients (2 B) and optimizer state (12 B) but every rank keeps the "
                   "full 2-byte weights. Try sharding.training_bytes_per_rank.")


def check_07_2(answer) -> bool:
    """80 GB accelerators needed to hold the training state of a 70 B model with FSDP."""
    if need_answer(answer, "Write a whole number of accelerators, e.g. check_07_2(10)."):
        return False
    return verdict(answer == 14,
                   "70 B x 16 B = 1.12 TB of weights, gradients and Adam state; 1.12 TB / 80 GB = 14 "
                   "(before activations, so in practice more).",
                   "Count 16 bytes per parameter (2 + 2 + 12), divide by 80 GB and round up.")


def check_07_3(answer) -> bool:
    """Fraction of the full parameter bytes one of 4 FSDP ranks holds."""
    if need_answer(answer, "Write a fraction between 0 and 1, e.g. check_07_3(0.3)."):
        return False
    return verdict(close(answer, 0.25, 0.05),
                   "Each rank keeps 1/N of every sharded tensor: 0.25 with 4 ranks (a little more when "
                   "a tensor's first dimension does not divide evenly).",
                   "fully_shard splits every parameter along its first dimension into N equal pieces.")
