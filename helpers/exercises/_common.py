"""Shared pieces of the exercise checks."""

from __future__ import annotations

import math


def verdict(ok: bool, right: str, wrong: str) -> bool:
    """Print why an answer is right or wrong, and return ``ok``."""
    print(("Right. " + right) if ok else ("Not yet. " + wrong))
    return ok


def close(answer, expected: float, rel: float) -> bool:
    """True when ``answer`` is a number within ``rel`` (relative) of ``expected``."""
    return (isinstance(answer, (int, float)) and not isinstance(answer, bool)
            and math.isclose(answer, expected, rel_tol=rel))


def need_answer(answer, hint: str) -> bool:
    """Print ``hint`` and return True when the learner has not answered yet (``None``)."""
    if answer is None:
        print(hint)
        return True
    return False


def not_a_number(answer, hint: str) -> bool:
    """Print a clear message and return True when ``answer`` is not a number (a string such as
    ``"25"`` included): the checks compare numbers, so they say so instead of failing on a TypeError."""
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        print(f"Not yet. Give a number, not {type(answer).__name__} {answer!r}. {hint}")
        return True
    return False
