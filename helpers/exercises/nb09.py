"""Exercise checks for notebook 09 (batching)."""
from __future__ import annotations

import math

from ._common import close, need_answer, not_a_number, verdict


def check_09_1(answer) -> bool:
    """Slot utilisation of one static batch of requests wanting 10, 12, 30 and 8 new tokens."""
    if need_answer(answer, "Write a fraction between 0 and 1, e.g. check_09_1(0.5)."):
        return False
    if not_a_number(answer, "Useful tokens / (slots x steps)."):
        return False
    expected = (10 + 12 + 30 + 8) / (4 * 30)
    return verdict(close(answer, expected, 0.01),
                   f"60 useful tokens / (4 slots x 30 steps) = {expected:.2f}: the batch runs as long as its "
                   "longest member, and half its slot-steps are held by finished requests.",
                   "The batch runs for as many steps as its longest member needs; count every slot at every step.")


def continuous_steps(lengths, slots: int) -> int:
    """Steps an iteration-level scheduler needs for requests all queued at once (admitted in order)."""
    free_at = [0] * slots  # the step at which each slot can take its next request
    for length in lengths:
        slot = min(range(slots), key=lambda s: free_at[s])
        free_at[slot] += length
    return max(free_at)


def check_09_2(answer) -> bool:
    """Steps for 10, 12, 30 and 8 tokens through 2 iteration-level slots."""
    if need_answer(answer, "Write a whole number of steps, e.g. check_09_2(50)."):
        return False
    if not_a_number(answer, "Count decoding steps."):
        return False
    expected = continuous_steps([10, 12, 30, 8], 2)
    return verdict(answer == expected,
                   f"{expected} steps: the 30-token request starts when the 10-token one leaves (step 10) and the "
                   "8-token one takes the other slot at step 12. Static batches of 2 would need 12 + 30 = 42.",
                   "A slot freed after step k is taken at step k + 1; follow both slots until the last request ends.")


def check_09_3(answer) -> bool:
    """Pages of 16 tokens held by a request of 45 prompt + 20 answer tokens, and the empty slots in them."""
    if need_answer(answer, "Write a pair (pages, empty_slots), e.g. check_09_3((3, 10))."):
        return False
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return verdict(False, "", "Give two numbers: the pages held and the empty token slots in them.")
    pages = math.ceil((45 + 20) / 16)
    expected = (pages, pages * 16 - 65)
    return verdict(tuple(answer) == expected,
                   f"65 tokens need {pages} pages of 16 ({pages * 16} slots), {expected[1]} of them empty: the waste "
                   "is at most one partly filled page per request, whatever the answer's length.",
                   "Round 65 tokens up to whole pages of 16, then subtract the tokens from the slots.")
