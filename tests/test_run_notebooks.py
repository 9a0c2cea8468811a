import pytest

from helpers.run_notebooks import notebook_paths


def test_notebook_paths_take_a_two_digit_number_a_stem_or_a_file_name():
    assert [p.stem for p in notebook_paths(["03"])] == ["03_fine_tuning"]
    assert [p.stem for p in notebook_paths(["03_fine_tuning", "05_quantization.ipynb"])] == \
        ["03_fine_tuning", "05_quantization"]
    assert len(notebook_paths(None)) >= 11


@pytest.mark.parametrize("name", ["0", "1", "03_fine", "99"])
def test_ambiguous_or_unknown_names_say_what_to_give(name):
    with pytest.raises(SystemExit, match="two-digit number") as raised:
        notebook_paths([name])
    assert "00_setup_and_baseline" in str(raised.value) or "matches" in str(raised.value)
