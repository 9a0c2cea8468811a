import json

import pytest

from helpers import results


def test_record_requires_a_notebook(results_dir, monkeypatch):
    monkeypatch.delenv("WORKBOOK_NOTEBOOK", raising=False)
    with pytest.raises(results.ResultsError, match="setup_notebook"):
        results.record("x", 1)


def test_record_writes_the_notebook_file(results_dir):
    results.set_notebook("99_test")
    results.record("speed", 12.5, unit="tokens/s")
    results.record("bytes", 10, unit="bytes", anchor="gpt3_fp32")
    stored = json.loads((results_dir / "99_test.json").read_text())
    assert stored["speed"] == {"value": 12.5, "unit": "tokens/s", "anchor": None, "profile": "quick"}
    assert stored["bytes"]["anchor"] == "gpt3_fp32"


def test_record_rejects_bad_keys_values_and_anchors(results_dir):
    results.set_notebook("99_test")
    with pytest.raises(results.ResultsError, match="identifier"):
        results.record("two words", 1)
    with pytest.raises(results.ResultsError, match="number, string or bool"):
        results.record("listy", [1, 2])
    with pytest.raises(results.ResultsError, match="data/anchors.json"):
        results.record("x", 1, anchor="no_such_anchor")
    assert not (results_dir / "99_test.json").exists()


def test_record_accepts_numpy_and_torch_scalars(results_dir):
    import numpy as np
    import torch

    results.set_notebook("99_test")
    results.record("a", np.float32(0.5))
    results.record("b", torch.tensor(3))
    assert results.load_results("99_test")["a"]["value"] == 0.5
    assert results.load_results("99_test")["b"]["value"] == 3


@pytest.mark.parametrize("expression, values, expected", [
    ("a <= 0.35 * b", {"a": 30, "b": 100}, True),
    ("a <= 0.35 * b", {"a": 40, "b": 100}, False),
    ("a >= b + 0.15", {"a": 0.5, "b": 0.2}, True),
    ("0.49 <= a <= 0.51", {"a": 0.5}, True),
    ("a < b and a > 0", {"a": 1, "b": 2}, True),
    ("a < b", {"a": 1}, None),
])
def test_evaluate_goal(expression, values, expected):
    assert results.evaluate_goal(expression, values) is expected


def test_evaluate_goal_refuses_function_calls():
    with pytest.raises(results.ResultsError, match="unsupported"):
        results.evaluate_goal("__import__('os')", {})


def test_scorecard_marks_met_and_not_met(results_dir):
    (results_dir / "05_quantization.json").write_text(json.dumps({
        "bytes_fp32": {"value": 1000, "unit": "bytes", "anchor": None, "profile": "quick"},
        "bytes_nf4": {"value": 300, "unit": "bytes", "anchor": "qlora_nf4", "profile": "quick"},
        "perplexity_fp32": {"value": 10.0, "unit": None, "anchor": None, "profile": "quick"},
        "perplexity_nf4": {"value": 12.0, "unit": None, "anchor": None, "profile": "quick"},
    }))
    rows = {row["key"]: row for row in results.scorecard_rows(results_dir)}
    assert rows["bytes_nf4"]["status"] == "met"
    assert rows["perplexity_nf4"]["status"] == "not met"
    assert rows["bytes_fp32"]["status"] == "—"
    path = results.scorecard(results_dir)
    text = path.read_text()
    assert "| 05_quantization | `bytes_nf4` | 300 B |" in text
    assert "QLoRA" in text and "goals met: 1 of 2" in text
    assert (results_dir / "scorecard.png").exists()


def test_every_goal_names_a_recorded_key_and_parses():
    anchors = results.load_anchors()
    for goal in anchors["goals"]:
        assert goal["key"] in goal["check"], goal
        # an empty namespace means "not measured", never an exception
        assert results.evaluate_goal(goal["check"], {}) is None
    for anchor in anchors["anchors"].values():
        assert anchor["source"] and anchor["figure"] and anchor["conditions"]


@pytest.mark.parametrize("value, unit, shown", [
    (538_060_288, "bytes", "538 MB"), (7e11, "bytes", "700 GB"), (0.8125, None, "0.812"),
    (27.46, "tokens/s", "27.46 tokens/s"), (134515008, "parameters", "134,515,008 parameters"),
])
def test_format_value(value, unit, shown):
    assert results.format_value(value, unit) == shown


def test_update_readme_rewrites_only_the_marked_table(results_dir, tmp_path):
    (results_dir / "02_rag.json").write_text(json.dumps({
        "recall_at_5": {"value": 0.95, "unit": None, "anchor": None, "profile": "quick"},
        "helper_key": {"value": 3, "unit": None, "anchor": None, "profile": "quick"},
    }))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{results.README_START}\nold table\n{results.README_END}\nfooter\n")
    assert results.update_readme(readme, results_dir)
    text = readme.read_text()
    assert "old table" not in text and "`recall_at_5` | 0.950 |" in text and "helper_key" not in text
    assert text.startswith("# Title\n") and text.endswith("footer\n")
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers")
    assert not results.update_readme(plain, results_dir)


def test_run_times_keep_the_latest_time_of_every_notebook(results_dir, tmp_path):
    assert results.run_time_line(results_dir) == ""
    results.save_run_times({"00_setup": 1.25, "05_quantization": 3.5}, results_dir)
    results.save_run_times({"05_quantization": 2.0}, results_dir)  # a partial run replaces only its notebook
    line = results.run_time_line(results_dir)
    assert "2 notebooks took 3.2 min" in line and "05_quantization (2.0 min)" in line
    assert results.run_time_line(results_dir, profile_name="full") == ""
    readme = tmp_path / "README.md"
    readme.write_text(f"{results.README_START}\n{results.README_END}\n")
    assert results.update_readme(readme, results_dir) and line in readme.read_text()
