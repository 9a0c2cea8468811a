"""Workbook settings: profile, device, seeds and paths.

Every notebook reads its sample sizes from :func:`profile` so that the quick
profile (a few minutes on a 2-core laptop) and the full profile (workshop-sized
samples) differ in one place only.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, asdict
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
RESULTS_DIR = Path(os.environ.get("WORKBOOK_RESULTS", PROJECT_ROOT / "results"))

PROFILES = ("quick", "full")


@dataclass(frozen=True)
class Profile:
    """Sample sizes for one run of the workbook."""

    name: str
    tickets_eval: int  # test tickets scored per prompt variant
    qa_eval: int  # QA questions answered per configuration
    perplexity_texts: int  # KB articles in the perplexity set
    perplexity_max_tokens: int  # tokens per perplexity window
    speed_prompts: int  # prompts per decoding-speed measurement
    new_tokens: int  # tokens generated per speed measurement
    repeats: int  # timed repetitions after the warm-up
    train_steps: int  # optimisation steps for the LoRA demo
    classifier_epochs: int  # epochs for the encoder classifier (teacher)
    distill_epochs: int  # epochs for the distilled student
    calibration_texts: int  # calibration samples for Wanda pruning
    ann_vectors: int  # synthetic vectors in the approximate-search demo
    fsdp_steps: int  # training steps in the FSDP demo
    batch_sizes: tuple  # batch sizes in the static-batching sweep
    load_requests: int  # requests per load-test step in the serving notebook
    load_time_limit_s: float  # wall-clock limit per load-test step
    assistant_questions: int  # distinct questions per configuration in notebook 12
    assistant_tickets: int  # tickets per configuration in notebook 12
    sweep_sparsities: tuple  # sparsities of notebook 04's perplexity-vs-sparsity sweep (one pass per point and method)
    kv_cache_prompts: int  # prompts in notebook 08's KV-cache on/off comparison
    kv_cache_new_tokens: int  # tokens generated there (the speed-up grows with them)
    kv_cache_repeats: int  # timed repetitions of that comparison
    prefix_requests: int  # requests in notebook 08's prefix-cache comparison
    dynamic_requests: int  # requests in notebook 08's simulated arrival stream
    serve_max_new_tokens: int  # tokens per request when a client of notebook 11's server does not say
    serve_request_timeout_s: float  # end-to-end HTTP timeout of the Serve proxy
    continuous_batch_size: int = 8  # batch slots of the static / dynamic / continuous batching comparison
    continuous_requests: int = 36  # requests in that comparison's arrival stream
    continuous_streams: int = 3  # seeded streams it is repeated over (the interval of its ratios)
    speculative_prompts: int = 8  # RAG prompts per speculative-decoding comparison
    speculative_new_tokens: int = 64  # tokens generated per prompt there
    speculative_validation_prompts: int = 4  # validation prompts for choosing the draft length
    speculative_free_form_prompts: int = 5  # free-form prompts (little to copy) in notebook 10
    speculative_assisted_prompts: int = 2  # prompts for assisted generation with a layer-dropped draft
    quant_calibration_windows: int = 1  # calibration windows (of perplexity_max_tokens) for notebook 05's plans


_PROFILES = {
    "quick": Profile("quick", tickets_eval=24, qa_eval=30, perplexity_texts=6,
                     perplexity_max_tokens=256, speed_prompts=2, new_tokens=32,
                     repeats=5, train_steps=60, classifier_epochs=3, distill_epochs=3,
                     calibration_texts=16, ann_vectors=100_000, fsdp_steps=8, batch_sizes=(1, 4, 8, 16),
                     load_requests=24, load_time_limit_s=45.0, assistant_questions=8, assistant_tickets=16,
                     sweep_sparsities=(0.0, 0.3, 0.5, 0.7), kv_cache_prompts=1, kv_cache_new_tokens=16,
                     kv_cache_repeats=5, prefix_requests=2, dynamic_requests=12, serve_max_new_tokens=16,
                     serve_request_timeout_s=60.0, continuous_batch_size=8, continuous_requests=36,
                     continuous_streams=3,
                     speculative_prompts=12, speculative_new_tokens=64, speculative_validation_prompts=4,
                     speculative_free_form_prompts=5, speculative_assisted_prompts=2),
    "full": Profile("full", tickets_eval=360, qa_eval=160, perplexity_texts=43,
                    perplexity_max_tokens=512, speed_prompts=4, new_tokens=128,
                    repeats=5, train_steps=300, classifier_epochs=6, distill_epochs=6,
                    calibration_texts=64, ann_vectors=500_000, fsdp_steps=30, batch_sizes=(1, 2, 4, 8, 16, 32),
                    load_requests=200, load_time_limit_s=240.0, assistant_questions=80, assistant_tickets=120,
                    sweep_sparsities=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7), kv_cache_prompts=4,
                    kv_cache_new_tokens=256, kv_cache_repeats=3, prefix_requests=8, dynamic_requests=64,
                    serve_max_new_tokens=48, serve_request_timeout_s=120.0, continuous_batch_size=8,
                    continuous_requests=64, continuous_streams=5, speculative_prompts=32, speculative_new_tokens=96,
                    speculative_validation_prompts=8, speculative_free_form_prompts=8,
                    speculative_assisted_prompts=4, quant_calibration_windows=4),
}


class ConfigError(ValueError):
    """A setting the workbook cannot use; the message says how to fix it."""


def profile(name: str | None = None) -> Profile:
    """Return the sample sizes for ``name`` or ``$WORKBOOK_PROFILE`` (default ``quick``)."""
    chosen = (name or os.environ.get("WORKBOOK_PROFILE") or "quick").strip().lower()
    if chosen not in _PROFILES:
        raise ConfigError(
            f"Unknown profile {chosen!r}. Set WORKBOOK_PROFILE to one of: "
            f"{', '.join(PROFILES)} (for example `export WORKBOOK_PROFILE=quick`)."
        )
    return _PROFILES[chosen]


def profile_dict(name: str | None = None) -> dict:
    """The profile as a plain dict, handy for printing in a notebook."""
    return asdict(profile(name))


def device() -> str:
    """``"cuda"`` when a GPU is usable, ``"mps"`` on Apple silicon, else ``"cpu"``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def module_device(module):
    """The device a model (or layer) computes on: that of its first parameter or buffer, else CPU.

    PyTorch's dynamic int8 layers keep their weights in packed form (neither parameter
    nor buffer); they run on the CPU only, which is what this returns for them.
    """
    import torch

    for tensors in (module.parameters(), module.buffers()):
        first = next(iter(tensors), None)
        if first is not None:
            return first.device
    return torch.device("cpu")


def synchronize(device=None) -> None:
    """Wait until queued GPU work on ``device`` has finished (no-op on CPU).

    CUDA and MPS run kernels asynchronously: read a clock only after this, or a timing
    measures how fast work was *queued*, not how fast it ran.
    """
    import torch

    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)
    elif kind == "mps" and getattr(torch, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.synchronize()


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and PyTorch so that a notebook run is repeatable."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is a dependency of torch, but keep this module light
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    return seed


def cache_dir() -> Path:
    """Folder for converted models and trained artefacts (``$WORKBOOK_CACHE`` or ~/.cache)."""
    base = os.environ.get("WORKBOOK_CACHE")
    path = Path(base) if base else Path.home() / ".cache" / "llm-optimization-workbook"
    path.mkdir(parents=True, exist_ok=True)
    return path


def on_colab() -> bool:
    """True inside Google Colab."""
    return "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ
