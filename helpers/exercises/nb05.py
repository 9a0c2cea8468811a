"""Exercise checks for notebook 05 (quantization)."""
from __future__ import annotations

from ._common import close, need_answer, verdict

_NF4_DOUBLE_BITS = 4 + 8 / 64 + 32 / (64 * 256)


def check_05_1(answer) -> bool:
    """Bits per weight of NF4 with double quantization (blocks of 64, scales in blocks of 256)."""
    if need_answer(answer, "Answer in bits per weight, e.g. check_05_1(4.0)."):
        return False
    return verdict(close(answer, _NF4_DOUBLE_BITS, 0.002),
                   f"4 bits + one 8-bit scale per 64 weights + one fp32 scale per 64 x 256 weights = "
                   f"{_NF4_DOUBLE_BITS:.3f} bits (4.5 without double quantization: 0.373 bits saved).",
                   "Add to the 4 bits: an 8-bit block scale shared by 64 weights, and a 32-bit scale shared by "
                   "256 of those blocks.")


def check_05_2(answer, memory_bandwidth_gb_s: float, model_bytes: float) -> bool:
    """Decode bound in tokens/s for a model of ``model_bytes`` at the measured bandwidth."""
    if need_answer(answer, "Answer in tokens/s, e.g. check_05_2(12.0, memory_bandwidth, nf4_bytes)."):
        return False
    expected = memory_bandwidth_gb_s * 1e9 / model_bytes
    return verdict(close(answer, expected, 0.05),
                   f"{memory_bandwidth_gb_s:.1f} GB/s / {model_bytes / 1e6:.0f} MB = {expected:.0f} tokens/s at "
                   "most: fewer bytes per token raise the ceiling; whether a kernel reaches it is another matter.",
                   "Every weight is read once per token: divide the bandwidth (bytes/s) by the model's bytes.")


def check_05_3(answer) -> bool:
    """Bytes of a 7 B-parameter model's weights in NF4 with double quantization."""
    if need_answer(answer, "Answer in bytes, e.g. check_05_3(7e9)."):
        return False
    expected = 7e9 * _NF4_DOUBLE_BITS / 8
    return verdict(close(answer, expected, 0.02),
                   f"7e9 x {_NF4_DOUBLE_BITS:.3f} bits / 8 = {expected / 1e9:.2f} GB: it fits a 6 GB laptop GPU "
                   "that could not hold the 14 GB of bf16 weights.",
                   "Multiply the parameters by the bits per weight from exercise 1, then divide by 8.")
