"""The exercise checks of notebook 09 accept the right answers and reject plausible wrong ones."""

from helpers import exercises
from helpers.exercises.nb09 import continuous_steps


def test_check_09_1(capsys):
    assert exercises.check_09_1(0.5)
    assert not exercises.check_09_1(1.0)
    assert not exercises.check_09_1(60 / (4 * 60))
    assert not exercises.check_09_1(None)
    assert not exercises.check_09_1("0.5")


def test_continuous_steps_follows_the_slots():
    assert continuous_steps([10, 12, 30, 8], 2) == 40
    assert continuous_steps([5, 5, 5, 5], 4) == 5
    assert continuous_steps([3, 1, 1, 1], 1) == 6


def test_check_09_2():
    assert exercises.check_09_2(40)
    assert not exercises.check_09_2(42)  # static batches of two
    assert not exercises.check_09_2(30)
    assert not exercises.check_09_2(None)


def test_check_09_3():
    assert exercises.check_09_3((5, 15))
    assert exercises.check_09_3([5, 15])
    assert not exercises.check_09_3((4, 0))
    assert not exercises.check_09_3(5)
    assert not exercises.check_09_3(None)
