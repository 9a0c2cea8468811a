import pytest

from helpers import labels

# answer, lenient label, strict label: the two rules differ exactly where a model answers in prose
CASES = [
    ("billing", "billing", "billing"),
    ("  Refund.\n", "refund", "refund"),
    ('"sync_issue"', "sync_issue", "sync_issue"),
    ("The label is billing.", "billing", "unknown"),
    ("password reset", "password_reset", "unknown"),
    ("I think they want their money back", "refund", "unknown"),
    ("biling", "billing", "unknown"),
    ("no idea", "unknown", "unknown"),
]


@pytest.mark.parametrize("answer, lenient, strict", CASES)
def test_parse_label_lenient_and_strict_rules(answer, lenient, strict):
    assert labels.parse_label(answer) == lenient
    assert labels.parse_label(answer, strict=True) == strict


def test_strict_rule_reports_its_rule_and_respects_the_label_set():
    assert labels.parse_label("billing", strict=True, with_rule=True) == ("billing", "exact")
    assert labels.parse_label("billing, refund", strict=True, with_rule=True) == ("unknown", "none")
    assert labels.parse_label("billing", labels=("refund",), strict=True) == "unknown"


@pytest.mark.parametrize("strict", [False, True])
def test_parse_label_rejects_non_strings_under_both_rules(strict):
    with pytest.raises(ValueError, match="string"):
        labels.parse_label(None, strict=strict)


def test_score_answers_reports_strict_and_lenient_accuracy():
    from helpers import finetune

    scored = finetune.score_answers(["billing", "The label is refund.", "cancel"], ["billing", "refund", "login"])
    assert scored["accuracy"] == pytest.approx(1 / 3)  # strict: only the bare label counts
    assert scored["accuracy_lenient"] == pytest.approx(2 / 3)
    assert scored["format_valid_rate"] == pytest.approx(2 / 3)
    assert scored["parsed"] == ["billing", "unknown", "cancel"]
