"""Exercise checks for notebook 10 (speculative decoding)."""
from __future__ import annotations

from ._common import close, need_answer, not_a_number, verdict


def _expected(acceptance: float, draft_tokens: int, cost_ratio: float) -> float:
    # written out here rather than imported, so the check does not trust the code it checks
    tokens = draft_tokens + 1 if acceptance == 1 else (1 - acceptance ** (draft_tokens + 1)) / (1 - acceptance)
    return tokens / (draft_tokens * cost_ratio + 1)


def check_10_1(answer, new_tokens: int, target_passes: int, drafted: int) -> bool:
    """Acceptance rate from the counts of one speculative decode."""
    if need_answer(answer, "Write the acceptance rate as a fraction, e.g. check_10_1(0.5, 64, 16, 80)."):
        return False
    if not_a_number(answer, "Accepted draft tokens / drafted tokens."):
        return False
    accepted = new_tokens - target_passes
    expected = accepted / drafted
    return verdict(close(answer, expected, 0.01),
                   f"Every verification pass adds exactly one token of the target's own, so {new_tokens} new tokens "
                   f"in {target_passes} passes means {accepted} came from the draft: {accepted} / {drafted} = "
                   f"{expected:.2f}.",
                   "Each pass yields the accepted draft tokens plus one token of the target's own: accepted = new "
                   "tokens - passes; divide by the drafted tokens.")


def check_10_2(answer, acceptance: float, draft_tokens: int, cost_ratio: float) -> bool:
    """Expected speed-up from Leviathan et al.'s formula."""
    if need_answer(answer, "Write the expected speed-up, e.g. check_10_2(1.8, 0.8, 4, 0.05)."):
        return False
    if not_a_number(answer, "Tokens per verification pass divided by the cost of one pass."):
        return False
    expected = _expected(acceptance, draft_tokens, cost_ratio)
    tokens = expected * (draft_tokens * cost_ratio + 1)
    return verdict(close(answer, expected, 0.02),
                   f"A pass yields (1 - a^(g+1)) / (1 - a) = {tokens:.2f} tokens and costs g c + 1 = "
                   f"{draft_tokens * cost_ratio + 1:.2f} target passes: {expected:.2f}x.",
                   "Tokens per pass: 1 + a + a^2 + ... + a^g = (1 - a^(g+1)) / (1 - a). Cost per pass: one target "
                   "pass plus g draft steps of c each. Divide the first by the second.")


def check_10_3(answer, draft_tokens: int, cost_ratio: float) -> bool:
    """Break-even acceptance: the lowest acceptance at which a drafter stops slowing decoding down."""
    if need_answer(answer, "Write the acceptance at which the expected speed-up is 1, e.g. check_10_3(0.4, 5, 0.5)."):
        return False
    if not_a_number(answer, "Search for the acceptance a where the expected speed-up equals 1."):
        return False
    if _expected(1.0, draft_tokens, cost_ratio) < 1:
        expected = None
    else:
        low, high = 0.0, 1.0
        for _ in range(60):  # bisection: the expected speed-up grows with the acceptance
            middle = (low + high) / 2
            low, high = (middle, high) if _expected(middle, draft_tokens, cost_ratio) < 1 else (low, middle)
        expected = high
    if expected is None:
        return verdict(False, "", f"Even a drafter that is always right cannot pay at cost ratio {cost_ratio}: "
                                  f"{draft_tokens + 1} tokens per pass cost "
                                  f"{draft_tokens * cost_ratio + 1:.2f} passes.")
    return verdict(abs(answer - expected) <= 0.01,
                   f"Below an acceptance of {expected:.2f} the drafter costs more than it saves "
                   f"(g = {draft_tokens}, c = {cost_ratio}); a cheaper drafter (smaller c) lowers that bar.",
                   "Find a with (1 - a^(g+1)) / (1 - a) = g c + 1, by trying values (it grows with a) or by bisection.")
