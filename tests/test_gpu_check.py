import pytest

from helpers import gpu_check


def test_without_cuda_nothing_runs_and_the_exit_code_is_zero(capsys):
    assert gpu_check.main([], cuda_available=lambda: False) == 0
    assert capsys.readouterr().out.strip() == gpu_check.NO_GPU_MESSAGE


def test_require_gpu_turns_a_missing_gpu_into_an_error(capsys):
    assert gpu_check.main(["--require-gpu"], cuda_available=lambda: False) == 2
    assert gpu_check.NO_GPU_MESSAGE in capsys.readouterr().out


def test_unknown_check_names_are_refused():
    with pytest.raises(SystemExit):
        gpu_check.main(["--only", "llm,warp-drive"], cuda_available=lambda: False)


def test_every_technique_has_a_check():
    assert {"llm", "bitsandbytes", "pruning", "lora", "encoders", "caching", "fsdp"} <= set(gpu_check.CHECKS)
    assert all(check.__doc__ for check in gpu_check.CHECKS.values())


def test_a_failing_check_is_reported_and_the_others_still_run():
    def passes(context):
        """Passes."""
        return ["measured 1.00 ms"]

    def fails(context):
        """Fails."""
        raise RuntimeError("Expected all tensors to be on the same device")

    printed = []
    outcomes = gpu_check.run_checks({"first": fails, "second": passes}, gpu_check.Context("cpu"), printed.append)
    assert [(outcome.name, outcome.ok) for outcome in outcomes] == [("first", False), ("second", True)]
    text = "\n".join(printed)
    assert "[FAIL] first" in text and "same device" in text
    assert "[PASS] second" in text and "measured 1.00 ms" in text
