"""Exercise checks for notebook 01 (prompt engineering)."""
from __future__ import annotations

from typing import Sequence

from ._common import need_answer, verdict

#: The answer exercise 1 asks the learner to parse by hand.
EXERCISE_1_ANSWER_TEXT = "The customer cancelled last week and now wants their money back for March."


def check_01_1(answer) -> bool:
    """Which label does ``parse_label`` give :data:`EXERCISE_1_ANSWER_TEXT`?"""
    from ..labels import parse_label

    if need_answer(answer, "Write the label as a string, e.g. check_01_1('billing')."):
        return False
    expected, rule = parse_label(EXERCISE_1_ANSWER_TEXT, with_rule=True)
    return verdict(answer == expected,
                   f"No label name appears, so the keyword rule decides; the earliest keyword wins: "
                   f"'cancel' (in 'cancelled') comes before 'money back', so it is {expected!r} ({rule}). "
                   "A parser is a design choice: here it misreads a refund request, which is one reason to "
                   "constrain the answer (label list, few-shot format, label scoring) instead of parsing prose.",
                   "Apply the rules in order: exact label, label name mentioned, then the earliest keyword "
                   "from labels.LABEL_KEYWORDS (a keyword must start a word).")


def expected_scoring_tokens(prompt_tokens: int, label_token_counts: Sequence[int]) -> tuple[int, int]:
    """Tokens fed to the model to score every label: ``(re-reading the prompt per label, reusing its cache)``."""
    without_cache = len(label_token_counts) * prompt_tokens + sum(label_token_counts)
    with_cache = prompt_tokens + sum(count - 1 for count in label_token_counts)
    return without_cache, with_cache


def check_01_2(tokens_without_cache, tokens_with_cache, prompt_tokens: int,
               label_token_counts: Sequence[int]) -> bool:
    """Tokens processed to score all labels, without and with reusing the prompt's KV cache."""
    if need_answer(tokens_without_cache, "Give two numbers of tokens: check_01_2(without, with, prompt_tokens, "
                                         "label_token_counts)."):
        return False
    without_cache, with_cache = expected_scoring_tokens(prompt_tokens, label_token_counts)
    ok = tokens_without_cache == without_cache and tokens_with_cache == with_cache
    return verdict(ok,
                   f"{len(label_token_counts)} x {prompt_tokens} + {sum(label_token_counts)} = {without_cache:,} "
                   f"tokens without the cache, {with_cache:,} with it: {without_cache / with_cache:.1f}x less work. "
                   "The last token of each label needs no forward pass: nothing follows it.",
                   "Without the cache every label re-reads the whole prompt plus its own tokens. With it the "
                   "prompt is read once; each label then feeds all its tokens but the last (the first is "
                   "predicted from the prompt's last position).")


def check_01_3(answer) -> bool:
    """An answer that fails the strict schema but passes it after :func:`helpers.structured_output.repair_json`."""
    from ..structured_output import repair_json, validate_triage_json

    if need_answer(answer, "Write a model answer as a string, e.g. check_01_3(\"{'label': 'refund', ...\")."):
        return False
    if not isinstance(answer, str):
        return verdict(False, "", "The answer must be a string: what the model would have written.")
    before = validate_triage_json(answer)
    after = validate_triage_json(repair_json(answer))
    if before.valid:
        return verdict(False, "", "This answer is already valid: nothing to repair. Break its form, not its content.")
    return verdict(after.valid,
                   f"Invalid as written ({before.error}), valid after repair: {after.record}. Repair fixes form; "
                   "it cannot add a missing key or choose a label for the model.",
                   f"Still invalid after repair ({after.error}). Repair only fixes form (quotes, fences, a "
                   "trailing comma, a missing closing brace, label spelling).")
