"""Exercise checks for notebook 00."""
from __future__ import annotations

from ._common import close, verdict


def check_00_1(answer) -> bool:
    """GPT-3's weights in bf16, in bytes."""
    if answer is None:
        print("Write your answer in bytes, e.g. check_00_1(123e9).")
        return False
    return verdict(close(answer, 175e9 * 2, 0.01),
                    "175 B parameters x 2 bytes = 350 GB: half of fp32.",
                    "bf16 uses 2 bytes per parameter; multiply by 175e9.")


def check_00_2(answer, memory_bandwidth_gb_s: float) -> bool:
    """Decode bound for a 7 B model in 4-bit at the measured bandwidth."""
    expected = memory_bandwidth_gb_s * 1e9 / (7e9 * 0.5)
    if answer is None:
        print("Write your answer in tokens/s.")
        return False
    return verdict(close(answer, expected, 0.05),
                    f"{memory_bandwidth_gb_s:.1f} GB/s / 3.5 GB = {expected:.1f} tokens/s at best.",
                    "4-bit is 0.5 byte per parameter, so 7 B parameters are 3.5 GB read per token.")
