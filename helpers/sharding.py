"""Memory arithmetic for model weights, and (in notebook 07) for sharded training."""

from __future__ import annotations

BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def weight_bytes(parameters: int | float, precision: str = "fp32") -> float:
    """Bytes needed to hold ``parameters`` weights at ``precision`` (fp32, fp16, bf16, int8, int4)."""
    if precision not in BYTES_PER_PARAM:
        raise ValueError(f"Unknown precision {precision!r}; use one of {', '.join(BYTES_PER_PARAM)}.")
    if parameters < 0:
        raise ValueError("parameters must be non-negative.")
    return parameters * BYTES_PER_PARAM[precision]


def weight_table(parameters: int | float) -> list[tuple[str, float]]:
    """``(precision, bytes)`` for every precision in :data:`BYTES_PER_PARAM`."""
    return [(precision, weight_bytes(parameters, precision)) for precision in BYTES_PER_PARAM]
