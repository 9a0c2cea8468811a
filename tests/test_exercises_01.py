from helpers import exercises
from helpers.exercises import nb01


def test_check_01_1(capsys):
    assert exercises.check_01_1("cancel") is True
    assert exercises.check_01_1("refund") is False
    assert exercises.check_01_1(None) is False
    assert "Not yet" in capsys.readouterr().out


def test_check_01_2():
    counts = [1, 3, 2]
    assert nb01.expected_scoring_tokens(100, counts) == (306, 103)
    assert exercises.check_01_2(306, 103, 100, counts) is True
    assert exercises.check_01_2(306, 106, 100, counts) is False
    assert exercises.check_01_2(None, None, 100, counts) is False


def test_check_01_3():
    assert exercises.check_01_3("{'label': 'refund', 'priority': 'high'}") is True
    assert exercises.check_01_3('{"label": "refund", "priority": "high"}') is False  # already valid
    assert exercises.check_01_3('{"label": "refund"}') is False  # repair cannot invent a key
    assert exercises.check_01_3(42) is False
    assert exercises.check_01_3(None) is False
