import subprocess
import sys
import time

import pytest

from helpers import install_torch
from helpers.install_torch import CPU_INDEX, choose_index


class Probe:
    """A fake reachability check that records the URLs it was asked about."""

    def __init__(self, answer: bool):
        self.answer, self.asked = answer, []

    def __call__(self, url):
        self.asked.append(url)
        return self.answer


def test_linux_uses_the_cpu_index_when_it_answers():
    probe = Probe(True)
    plan = choose_index("Linux", None, probe)
    assert plan.index_url == CPU_INDEX and plan.warning is None and probe.asked == [CPU_INDEX]
    assert plan.pip_arguments("2.13.0") == ["install", "torch==2.13.0", "--index-url", CPU_INDEX]


def test_linux_falls_back_to_the_registry_with_a_cuda_warning():
    plan = choose_index("Linux", None, Probe(False))
    assert plan.index_url is None
    assert plan.pip_arguments("2.13.0") == ["install", "torch==2.13.0"]
    assert "CUDA" in plan.warning and "several GB" in plan.warning


@pytest.mark.parametrize("system", ["Darwin", "Windows"])
def test_macos_and_windows_use_the_registry_without_probing(system):
    probe = Probe(True)
    plan = choose_index(system, None, probe)
    assert plan.index_url is None and plan.warning is None and probe.asked == []


@pytest.mark.parametrize("system", ["Linux", "Darwin", "Windows"])
def test_an_override_wins_everywhere_without_probing(system):
    probe = Probe(False)
    plan = choose_index(system, " https://mirror.example/whl/cpu ", probe)
    assert plan.index_url == "https://mirror.example/whl/cpu" and probe.asked == []
    assert plan.pip_arguments("2.13.0")[-2:] == ["--index-url", "https://mirror.example/whl/cpu"]


@pytest.mark.parametrize("word", ["default", "DEFAULT", "pypi"])
def test_override_default_means_the_plain_registry(word):
    probe = Probe(True)
    plan = choose_index("Linux", word, probe)
    assert plan.index_url is None and plan.warning is None and probe.asked == []


def test_unreachable_probe_returns_false_quickly():
    start = time.perf_counter()
    # a reserved TLD never resolves; port 9 on localhost refuses at once
    assert not install_torch.index_reachable("http://workbook-probe.invalid/whl/cpu", timeout_s=1.0)
    assert not install_torch.index_reachable("http://127.0.0.1:9/whl", timeout_s=1.0)
    assert time.perf_counter() - start < 3.0


def test_module_runs_with_the_standard_library_only():
    # -S without site-packages: any third-party import would fail; --dry-run installs nothing
    code = ("import sys; sys.path.insert(0, '.'); "
            "import helpers.install_torch as m; "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'numpy', 'transformers')))")
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                            cwd=install_torch.__file__.rsplit("/helpers/", 1)[0])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_dry_run_prints_the_override_command(capsys):
    assert install_torch.main(["--version", "9.9.9", "--index", "https://mirror.example/cpu", "--dry-run"]) == 0
    assert "torch==9.9.9 --index-url https://mirror.example/cpu" in capsys.readouterr().out


def test_makefile_environment_and_dockerfile_agree():
    import re

    from helpers.config import PROJECT_ROOT

    makefile = (PROJECT_ROOT / "Makefile").read_text()
    environment = (PROJECT_ROOT / "environment.yml").read_text()
    dockerfile = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text()
    version = re.search(r"^TORCH_VERSION := (\S+)", makefile, re.M).group(1)
    assert "-m helpers.install_torch --version $(TORCH_VERSION)" in makefile
    assert makefile.index("helpers.install_torch") < makefile.index("-e '.[serve,dev]'")  # torch first
    assert f"- torch=={version}" in environment and f"--extra-index-url {CPU_INDEX}" in environment
    assert '-e ".[serve,dev]"' in environment
    assert f"python -m helpers.install_torch --version {version}" in dockerfile
    assert f"ARG TORCH_INDEX={CPU_INDEX}" in dockerfile
