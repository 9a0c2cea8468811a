"""Exercise checks for notebook 04 (pruning)."""
from __future__ import annotations

from ._common import close, need_answer, verdict

# The row and input norms of exercise 1 (also printed in the notebook).
EXERCISE_ROW = (0.5, -0.1, 0.3, 0.05)
EXERCISE_NORMS = (0.1, 4.0, 1.0, 10.0)


def check_04_1(answer) -> bool:
    """Which two columns of EXERCISE_ROW does Wanda prune at 50 %?"""
    if need_answer(answer, "Answer with the set of column indices Wanda drops, e.g. check_04_1({0, 1})."):
        return False
    scores = [abs(w) * n for w, n in zip(EXERCISE_ROW, EXERCISE_NORMS)]
    expected = set(sorted(range(4), key=scores.__getitem__)[:2])
    try:
        chosen = set(answer)
    except TypeError:
        chosen = None
    return verdict(chosen == expected,
                   "Scores |w| x ||x|| are 0.05, 0.4, 0.3, 0.5: columns 0 and 2 go. Magnitude alone would drop "
                   "1 and 3, the two weights that meet the largest inputs.",
                   "Multiply each |weight| by its input norm and drop the two smallest products.")


def check_04_2(answer) -> bool:
    """Bytes of a 2:4 sparse fp16 matrix relative to dense fp16 (2-bit index per kept value)."""
    if need_answer(answer, "Answer with a ratio such as 0.7, e.g. check_04_2(0.7)."):
        return False
    expected = (0.5 * 2 + 0.5 * 2 / 8) / 2  # half the values at 2 bytes + a 2-bit position for each
    return verdict(close(answer, expected, 0.01),
                   f"Half the fp16 values plus 2 bits of position per kept value: {expected:.4f} of dense, "
                   "so 2:4 saves ~44 % of the bytes, not 50 %.",
                   "Per group of 4 weights: 2 kept values x 2 bytes, plus a 2-bit index for each kept value, "
                   "versus 4 x 2 bytes dense.")


def check_04_3(answer, config, total_parameters: int) -> bool:
    """Fraction of all parameters removed by dropping 25 % of every MLP's intermediate neurons."""
    if need_answer(answer, "Answer with a fraction of all parameters, e.g. check_04_3(0.1, llm.config, params)."):
        return False
    removed = int(config.intermediate_size * 0.25) * 3 * config.hidden_size * config.num_hidden_layers
    expected = removed / total_parameters
    return verdict(close(answer, expected, 0.02),
                   f"Each neuron owns one row of gate and up and one column of down: 3 x {config.hidden_size} "
                   f"weights; {removed / 1e6:.1f} M of {total_parameters / 1e6:.1f} M = {expected:.1%}.",
                   "Count 3 x hidden_size weights per removed neuron, x neurons removed per layer x layers, "
                   "then divide by all parameters (embeddings included).")
