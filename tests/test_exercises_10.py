"""The exercise checks of notebook 10 accept the right answers and reject wrong ones."""

from helpers import exercises, speculative


def test_check_10_1_acceptance_from_counts(capsys):
    assert exercises.check_10_1(48 / 80, 64, 16, 80)
    assert not exercises.check_10_1(64 / 80, 64, 16, 80)  # forgot the target's own token per pass
    assert not exercises.check_10_1(None, 64, 16, 80)
    assert not exercises.check_10_1("0.6", 64, 16, 80)
    assert "Right" in capsys.readouterr().out


def test_check_10_2_expected_speedup_agrees_with_the_helper():
    expected = speculative.expected_speedup(0.8, 4, 0.05)
    assert exercises.check_10_2(expected, 0.8, 4, 0.05)
    assert not exercises.check_10_2((1 - 0.8 ** 5) / 0.2, 0.8, 4, 0.05)  # draft cost ignored
    assert not exercises.check_10_2(None, 0.8, 4, 0.05)


def test_check_10_3_break_even_acceptance():
    bisected = [a / 1000 for a in range(1001) if speculative.expected_speedup(a / 1000, 5, 0.5) >= 1][0]
    assert exercises.check_10_3(bisected, 5, 0.5)
    assert not exercises.check_10_3(bisected + 0.1, 5, 0.5)
    assert not exercises.check_10_3(0.5, 5, 1.0)  # as costly as the target: breaks even only when always right
