import json
import math

import pytest

from helpers import results


def test_record_requires_a_notebook(results_dir, monkeypatch):
    monkeypatch.delenv("WORKBOOK_NOTEBOOK", raising=False)
    with pytest.raises(results.ResultsError, match="setup_notebook"):
        results.record("x", 1)


def test_record_writes_one_run_with_its_id_profile_and_machine(results_dir):
    run_id = results.set_notebook("99_test")
    results.record("speed", 12.5, unit="tokens/s", n=5, interval=(11.0, 13.0), interval_kind="IQR")
    results.record("bytes", 10, unit="bytes", anchor="gpt3_fp32")
    stored = json.loads((results_dir / "99_test.json").read_text())
    assert stored["run_id"] == run_id and stored["profile"] == "quick" and stored["machine"]
    assert stored["results"]["speed"]["interval"] == [11.0, 13.0]
    assert stored["results"]["speed"]["n"] == 5 and stored["results"]["speed"]["run_id"] == run_id
    assert stored["results"]["bytes"]["anchor"] == "gpt3_fp32"


def test_record_unpacks_a_measurement_dict(results_dir):
    from helpers import metrics

    results.set_notebook("99_test")
    entry = results.record("hit_rate", metrics.proportion([1, 1, 0, 0]), split="test")
    assert entry["value"] == 0.5 and entry["n"] == 4 and entry["split"] == "test"
    assert entry["interval_kind"] == "Wilson 95 %" and entry["interval"][0] < 0.5 < entry["interval"][1]


def test_starting_a_notebook_replaces_its_results_so_stale_keys_cannot_be_used(results_dir):
    results.set_notebook("02_rag")
    results.record("rag_gain_over_closed_book", 0.5, n=30, interval=(0.35, 0.65))
    results.set_notebook("02_rag")  # a new run of the same notebook
    assert results.load_results("02_rag") == {}
    rows = {row["key"]: row for row in results.scorecard_rows(results_dir)}
    assert rows["rag_gain_over_closed_book"]["status"] == "not measured"


def test_a_key_from_another_run_is_not_measured(results_dir):
    results.set_notebook("02_rag")
    results.record("rag_gain_over_closed_book", 0.5, n=30, interval=(0.35, 0.65))
    path = results_dir / "02_rag.json"
    stored = json.loads(path.read_text())
    stored["results"]["rag_gain_over_closed_book"]["run_id"] = "an-earlier-run"  # merged in from elsewhere
    path.write_text(json.dumps(stored))
    rows = {row["key"]: row for row in results.scorecard_rows(results_dir)}
    assert rows["rag_gain_over_closed_book"]["status"] == "not measured"
    assert "another run" in rows["rag_gain_over_closed_book"]["note"]


def test_a_file_from_an_older_format_counts_as_not_measured(results_dir):
    (results_dir / "02_rag.json").write_text(json.dumps({"recall_at_5": {"value": 0.99, "profile": "quick"}}))
    rows = {row["key"]: row for row in results.scorecard_rows(results_dir)}
    assert rows["recall_at_5"]["status"] == "not measured"


def test_record_rejects_bad_keys_values_intervals_and_anchors(results_dir):
    results.set_notebook("99_test")
    with pytest.raises(results.ResultsError, match="identifier"):
        results.record("two words", 1)
    with pytest.raises(results.ResultsError, match="number, string or bool"):
        results.record("listy", [1, 2])
    with pytest.raises(results.ResultsError, match="data/anchors.json"):
        results.record("x", 1, anchor="no_such_anchor")
    with pytest.raises(results.ResultsError, match="low > high"):
        results.record("x", 1, interval=(2, 1))
    with pytest.raises(results.ResultsError, match="two numbers"):
        results.record("x", 1, interval=("a", 1))
    with pytest.raises(results.ResultsError, match="n must be"):
        results.record("x", 1, n=0)
    assert results.load_results("99_test") == {}


def test_record_accepts_numpy_and_torch_scalars(results_dir):
    import numpy as np
    import torch

    results.set_notebook("99_test")
    results.record("a", np.float32(0.5), n=np.int64(3), interval=(np.float64(0.1), torch.tensor(0.9)))
    results.record("b", torch.tensor(3))
    assert results.load_results("99_test")["a"]["value"] == 0.5
    assert results.load_results("99_test")["a"]["n"] == 3
    assert results.load_results("99_test")["b"]["value"] == 3


def _run(entries: dict, run_id="r1", profile="quick") -> dict:
    return {"run_id": run_id, "profile": profile,
            "results": {key: {"value": value, "interval": interval, "n": n, "run_id": run_id, "profile": profile}
                        for key, (value, interval, n) in entries.items()}}


GOAL = {"key": "gain", "op": ">=", "bound": 0.15}


@pytest.mark.parametrize("value, interval, expected", [
    (0.40, (0.20, 0.60), "met"),          # whole interval above the bound
    (0.05, (-0.10, 0.12), "not met"),     # whole interval below
    (0.20, (0.05, 0.35), "undecided"),    # straddles: even though the point value clears the bound
    (0.15, (0.15, 0.15), "met"),          # on the bound counts for >=
])
def test_judge_uses_the_whole_interval(value, interval, expected):
    assert results.judge(GOAL, _run({"gain": (value, interval, 24)}))["status"] == expected


def test_judge_upper_bounds_and_undecided_says_how_many_samples_would_decide():
    goal = {"key": "ratio", "op": "<=", "bound": 1.02}
    assert results.judge(goal, _run({"ratio": (1.00, (0.99, 1.01), 40)}))["status"] == "met"
    assert results.judge(goal, _run({"ratio": (1.10, (1.05, 1.15), 40)}))["status"] == "not met"
    verdict = results.judge(goal, _run({"ratio": (1.03, (1.00, 1.06), 45)}))
    assert verdict["status"] == "undecided" and "about 405 samples (now 45)" in verdict["note"]
    on_the_bound = results.judge(goal, _run({"ratio": (1.0201, (1.011, 1.029), 46)}))
    assert on_the_bound["status"] == "undecided" and "sits on the bound" in on_the_bound["note"]


def test_judge_nan_is_not_met_and_missing_is_not_measured():
    assert results.judge(GOAL, _run({"gain": ("nan", None, 10)}))["status"] == "not met"
    assert results.judge(GOAL, _run({"gain": (float("nan"), (0.0, 1.0), 10)}))["status"] == "not met"
    assert results.judge(GOAL, _run({"gain": (0.5, (0.0, math.inf), 10)}))["status"] == "not met"
    assert results.judge(GOAL, _run({"other": (0.5, (0.4, 0.6), 10)}))["status"] == "not measured"
    assert results.judge(GOAL, {})["status"] == "not measured"


def test_judge_refuses_a_goal_it_cannot_read_without_crashing():
    verdict = results.judge({"key": "gain", "op": "=>", "bound": 0.1}, _run({"gain": (0.5, None, 1)}))
    assert verdict["status"] == "not measured" and "op" in verdict["note"]


def test_a_goal_cannot_be_met_while_what_it_protects_is_zero():
    goal = {"key": "false_hits", "op": "<=", "bound": 0.05,
            "requires": [{"key": "hits", "op": ">", "bound": 0, "why": "nothing hit"}]}
    assert results.judge(goal, _run({"false_hits": (0.0, (0.0, 0.04), 53), "hits": (0.0, (0, 0.1), 26)})) == \
        {"status": "not met", "note": "nothing hit"}
    assert results.judge(goal, _run({"false_hits": (0.0, (0.0, 0.04), 53), "hits": (0.6, (0.4, 0.8), 26)}))[
        "status"] == "met"
    assert results.judge(goal, _run({"false_hits": (0.0, (0.0, 0.04), 53)}))["status"] == "not measured"


def test_exact_values_are_judged_as_numbers():
    goal = {"key": "failed", "op": "==", "bound": 0}
    assert results.judge(goal, _run({"failed": (0, None, 24)}))["status"] == "met"
    assert results.judge(goal, _run({"failed": (2, None, 24)}))["status"] == "not met"


def test_scorecard_lists_every_goal_even_when_not_recorded(results_dir):
    results.set_notebook("05_quantization")
    results.record("bytes_ratio_nf4", 0.31)
    results.record("perplexity_ratio_nf4", 1.31, n=45, interval=(1.25, 1.38), interval_kind="block bootstrap")
    results.record("bytes_nf4", 170_000_000, unit="bytes", anchor="qlora_nf4")
    rows = {(row["notebook"], row["key"]): row for row in results.scorecard_rows(results_dir)}
    assert rows[("05_quantization", "bytes_ratio_nf4")]["status"] == "met"
    assert rows[("05_quantization", "perplexity_ratio_nf4")]["status"] == "not met"
    assert rows[("05_quantization", "perplexity_ratio_int8_bnb")]["status"] == "not measured"
    assert rows[("01_prompt_engineering", "prompt_gain_best_vs_zero_shot")]["status"] == "not measured"
    assert rows[("05_quantization", "bytes_nf4")]["status"] == "—"
    text = results.scorecard(results_dir).read_text()
    assert "| 05_quantization | `perplexity_ratio_nf4` | 1.31 | [1.25, 1.38] (block bootstrap) | 45 |" in text
    assert "not measured" in text and "QLoRA" in text
    assert (results_dir / "scorecard.png").exists()


def test_every_goal_is_well_formed_and_not_a_constant():
    anchors = results.load_anchors()
    for goal in anchors["goals"]:
        assert goal["op"] in (">=", ">", "<=", "<", "==") and isinstance(goal["bound"], (int, float)), goal
        assert goal["notebook"][:2].isdigit() and goal["goal"], goal
        # by-construction facts are checks in the notebooks, never goals
        assert goal["key"] not in ("gpt3_fp32_bytes", "params", "sparsity_wanda_50", "fsdp_rank_ratio"), goal
        assert results.judge(goal, {})["status"] == "not measured"
    for anchor in anchors["anchors"].values():
        assert anchor["source"] and anchor["figure"] and anchor["conditions"]


@pytest.mark.parametrize("value, unit, shown", [
    (538_060_288, "bytes", "538 MB"), (7e11, "bytes", "700 GB"), (0.8125, None, "0.812"),
    (27.46, "tokens/s", "27.46 tokens/s"), (134515008, "parameters", "134,515,008 parameters"),
])
def test_format_value(value, unit, shown):
    assert results.format_value(value, unit) == shown


def test_read_value_checks_the_profile(results_dir, monkeypatch):
    results.set_notebook("08_caching")
    results.record("semantic_cache_threshold", 0.93)
    assert results.read_value("08_caching", "semantic_cache_threshold") == 0.93
    with pytest.raises(results.ResultsError, match="run notebooks/00_setup"):
        results.read_value("00_setup_and_baseline", "memory_bandwidth_gb_s")
    monkeypatch.setenv("WORKBOOK_PROFILE", "full")
    with pytest.raises(results.ResultsError, match="'quick' profile"):
        results.read_value("08_caching", "semantic_cache_threshold")


def test_update_readme_rewrites_only_the_marked_table(results_dir, tmp_path):
    results.set_notebook("02_rag")
    results.record("recall_at_5", 0.95, n=188, interval=(0.91, 0.97), interval_kind="Wilson 95 %")
    results.record("answer_recall_at_3", 0.80, n=188, interval=(0.74, 0.85))
    results.record("helper_key", 3)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{results.README_START}\nold table\n{results.README_END}\nfooter\n")
    assert results.update_readme(readme, results_dir)
    text = readme.read_text()
    assert "old table" not in text and "helper_key" not in text
    assert "| 02 | `recall_at_5` | 0.950 | [0.910, 0.970] (Wilson 95 %) | 188 |" in text
    assert "answer_recall_at_3 = 0.800" in text  # the companion shows beside its goal
    assert "`rag_gain_over_closed_book` | — |" in text and "not measured" in text
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


def test_goal_status_reads_the_current_run_for_prose(results_dir):
    results.set_notebook("02_rag")
    results.record("rag_gain_over_closed_book", 0.25, n=30, interval=(0.10, 0.40))
    status = results.goal_status("rag_gain_over_closed_book")
    assert status.startswith("undecided (about") and "samples" in status
    results.record("rag_gain_over_closed_book", 0.5, n=30, interval=(0.35, 0.65))
    assert results.goal_status("rag_gain_over_closed_book") == "met"
    with pytest.raises(results.ResultsError, match="no goal"):
        results.goal_status("recall_at_1")
