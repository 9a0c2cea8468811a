"""The exercise checks of notebooks 00 and 10 say right for right answers and wrong for wrong ones."""

from helpers import exercises
from helpers.assistant import Outcome


def test_check_00_1(capsys):
    assert exercises.check_00_1(350e9)
    assert not exercises.check_00_1(700e9)
    assert not exercises.check_00_1(None)
    assert "bytes" in capsys.readouterr().out


def test_check_00_2():
    assert exercises.check_00_2(20e9 / 3.5e9, 20.0)
    assert not exercises.check_00_2(20e9 / 7e9, 20.0)


def _outcomes():
    # "slow_bad" takes the longest in total but has the lowest p95 latency per request
    return [Outcome("baseline", 0.2, 0.1, 10, 1.0, 100, latencies_s=[0.1] * 10),
            Outcome("prompting", 0.4, 0.1, 10, 2.0, 100, latencies_s=[0.2] * 10),
            Outcome("rag", 0.4, 0.6, 10, 3.0, 150, latencies_s=[0.3] * 10),
            Outcome("slow_bad", 0.1, 0.1, 10, 9.0, 100, latencies_s=[0.05] * 10)]


def test_check_12_1():
    assert exercises.check_12_1({"baseline", "prompting", "rag", "slow_bad"}, _outcomes())
    assert not exercises.check_12_1({"baseline", "prompting", "rag"}, _outcomes())  # the front by total time
    assert not exercises.check_12_1({"rag"}, _outcomes())


def test_check_12_2():
    assert exercises.check_12_2(50.0, _outcomes())
    assert not exercises.check_12_2(10.0, _outcomes())
    assert not exercises.check_12_2(None, _outcomes())


def test_check_12_2_says_a_string_is_not_a_number(capsys):
    assert exercises.check_12_2("50", _outcomes()) is False
    assert "Give a number, not str '50'" in capsys.readouterr().out
