"""Exercise checks for notebook 12."""

from __future__ import annotations

from ._common import close, need_answer, not_a_number, verdict


def check_12_1(answer, outcomes) -> bool:
    """Which configurations are on the Pareto front (p95 latency per request vs accuracy)? A set of names."""
    from ..assistant import pareto_front

    if need_answer(answer, "Give a set of configuration names, e.g. {'baseline', 'rag'}."):
        return False
    front = {outcomes[i].name for i in pareto_front([(o.latency_p95_ms, o.accuracy) for o in outcomes])}
    return verdict(set(answer) == front,
                   f"The front is {sorted(front)}: no other configuration is both faster and more accurate.",
                   "A configuration is on the front when no other one has lower p95 latency AND higher "
                   "(or equal) accuracy. Compare each pair in the table.")


def check_12_2(answer, outcomes) -> bool:
    """By how many accuracy points (0..100) did adding retrieval change question-answering accuracy?"""
    hint = "Give the change in points, e.g. 25.0 (negative if it fell)."
    if need_answer(answer, hint) or not_a_number(answer, hint):
        return False
    by_name = {outcome.name: outcome for outcome in outcomes}
    expected = 100 * (by_name["rag"].qa_accuracy - by_name["prompting"].qa_accuracy)
    return verdict(close(answer, expected, 0.02) or abs(answer - expected) < 0.5,
                   f"Retrieval moved question accuracy by {expected:+.1f} points: questions about Lumen Cloud's own "
                   "facts cannot be answered from the model's weights at all.",
                   "Compare qa_accuracy of 'rag' with 'prompting' (the configuration just before it), times 100.")
