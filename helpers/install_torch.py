"""Install the CPU build of PyTorch before anything else (``make setup`` runs this first).

Standard library only: it runs in a fresh virtual environment, before the workbook
and its dependencies are installed::

    python -m helpers.install_torch --version 2.13.0

Which index pip is pointed at:

* Linux: PyTorch's CPU wheel index (:data:`CPU_INDEX`) when it answers within a few
  seconds. On Linux the default registry (PyPI) serves the CUDA build, which pulls
  several GB of NVIDIA libraries; so when the CPU index cannot be reached we fall back
  to the default registry and print a warning saying so.
* macOS and Windows: the default registry, whose torch wheels for these systems are
  CPU builds already.
* ``TORCH_INDEX=<url>`` (environment or ``--index``) uses that index on any system;
  ``TORCH_INDEX=default`` uses the default registry without probing anything.

Afterwards it prints the build that ended up installed (``torch.__version__`` and
``torch.version.cuda``, which is ``None`` for a CPU build).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from typing import Callable

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 4.0
DEFAULT_WORDS = ("default", "pypi", "")  # TORCH_INDEX values that mean "the plain registry"
CUDA_WARNING = ("WARNING: PyTorch's CPU wheel index ({index}) could not be reached, so torch comes from the "
                "default registry. On Linux that is the CUDA build: several GB of NVIDIA packages. To avoid it, "
                "retry when {index} is reachable, or set TORCH_INDEX to a mirror of it.")


@dataclass(frozen=True)
class Plan:
    """What to install torch from: ``index_url`` (None = pip's default registry) and why."""

    index_url: str | None
    reason: str
    warning: str | None = None

    def pip_arguments(self, version: str) -> list[str]:
        """Arguments after ``python -m pip``."""
        arguments = ["install", f"torch=={version}"]
        if self.index_url:
            arguments += ["--index-url", self.index_url]
        return arguments


def choose_index(system: str, override: str | None, reachable: Callable[[str], bool]) -> Plan:
    """Decide where torch comes from, given the OS name (``platform.system()``), the
    ``TORCH_INDEX`` override (None when unset) and a probe ``reachable(url) -> bool``.

    The probe is only called on Linux without an override.
    """
    if override is not None:
        chosen = override.strip()
        if chosen.lower() in DEFAULT_WORDS:
            return Plan(None, "TORCH_INDEX=default: the default registry")
        return Plan(chosen, f"TORCH_INDEX={chosen}")
    if system != "Linux":
        return Plan(None, f"{system or 'this system'}: the default registry's torch wheels are CPU builds")
    if reachable(CPU_INDEX):
        return Plan(CPU_INDEX, "Linux: PyTorch's CPU wheel index")
    return Plan(None, "Linux: CPU wheel index unreachable, using the default registry",
                warning=CUDA_WARNING.format(index=CPU_INDEX))


def index_reachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when ``url`` answers an HTTP request within ``timeout_s`` seconds (name lookup included).

    The request runs in a daemon thread so that a slow DNS lookup, which the socket
    timeout does not cover, cannot make ``make setup`` hang.
    """
    answered: list[bool] = []

    def probe() -> None:
        try:
            request = urllib.request.Request(url.rstrip("/") + "/torch/", method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                answered.append(response.status < 400)
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            answered.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answered and answered[0])


def installed_torch_version() -> str | None:
    """Version of the torch distribution in this environment, read without importing torch."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def describe_installed(python: str = sys.executable) -> str:
    """One line naming the installed build, from a fresh interpreter (``torch.version.cuda``: None = CPU)."""
    code = ("import torch; cuda = torch.version.cuda; "
            "print(f'torch {torch.__version__}, CUDA {cuda} ('"
            " + ('CPU build' if cuda is None else 'CUDA build') + ')')")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if result.returncode:
        return "torch could not be imported: " + (result.stderr.strip().splitlines() or ["no output"])[-1]
    return result.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install PyTorch (CPU build where possible) before the workbook.")
    parser.add_argument("--version", required=True, help="exact torch version, e.g. 2.13.0")
    parser.add_argument("--index", default=os.environ.get("TORCH_INDEX") or None,
                        help="index URL, or 'default' for the plain registry (default: $TORCH_INDEX, else automatic)")
    parser.add_argument("--dry-run", action="store_true", help="print the pip command without running it")
    args = parser.parse_args(argv)

    installed = installed_torch_version()
    if installed and installed.split("+")[0] == args.version and not args.dry_run:
        print(f"torch {installed} is already installed; leaving it as it is.")
        print(describe_installed())
        return 0
    plan = choose_index(platform.system(), args.index, index_reachable)
    command = [sys.executable, "-m", "pip", *plan.pip_arguments(args.version)]
    print(f"Installing torch=={args.version} from {plan.index_url or 'the default registry'} ({plan.reason}).")
    if plan.warning:
        print(plan.warning, file=sys.stderr)
    if args.dry_run:
        print(" ".join(command))
        return 0
    returncode = subprocess.call(command)
    if returncode:
        print(f"Installing torch failed (pip exit code {returncode}). Command: {' '.join(command)}", file=sys.stderr)
        return returncode
    print("Installed: " + describe_installed())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
