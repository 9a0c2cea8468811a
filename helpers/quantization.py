"""Quantization: the same LLM weights in fewer bits, and what that does to bytes, speed and quality.

The notebook loads bitsandbytes variants itself (the ``BitsAndBytesConfig`` lines are
the lesson); this module holds the plumbing around them:

* :func:`dynamic_int8` — PyTorch's dynamic int8 (``torch.ao.quantization.quantize_dynamic``,
  deprecated in favour of torchao, which is not a dependency of the workbook);
* :func:`expected_bytes` — bytes in memory worked out from the layer shapes, to check
  :func:`helpers.metrics.model_bytes` (which also sees packed int8 weights and scales);
* :func:`linear_layer_timings` — one projection layer timed in every format, to see
  *why* a format is fast or slow;
* the optional GGUF row through llama-cpp-python (:func:`gguf_available`,
  :func:`load_gguf`, :func:`gguf_perplexity`, :func:`gguf_generation_speed`).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import warnings
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import module_device, synchronize

# Block sizes bitsandbytes uses for 4-bit weights (QLoRA, section 3) and for the
# second-level quantization of their scales ("double quantization").
NF4_BLOCK_SIZE = 64
DOUBLE_QUANT_BLOCK_SIZE = 256


def quiet_bitsandbytes() -> None:
    """Silence bitsandbytes' per-call log lines (e.g. "inputs will be cast to float16") on CPU."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def block_linears(model) -> dict[str, nn.Module]:
    """The projection layers inside the decoder blocks (what every scheme here quantizes).

    The token embedding and the ``lm_head`` tied to it stay in the original precision in
    every variant: bitsandbytes skips ``lm_head`` by default, and we do the same for
    dynamic int8 so that the rows of the comparison differ only in the blocks.
    """
    found = {name: module for name, module in model.named_modules()
             if ".layers." in f".{name}." and _is_projection(module)}
    if not found:
        raise ValueError("No projection layers found under '.layers.'; pass a Llama-style causal LM.")
    return found


def _is_projection(module) -> bool:
    # bitsandbytes layers subclass nn.Linear; torch.ao's dynamic int8 layer is a class named "Linear"
    return isinstance(module, nn.Linear) or type(module).__name__.startswith("Linear")


def dynamic_int8(model) -> nn.Module:
    """A copy of ``model`` whose block projections use PyTorch dynamic int8.

    Weights are stored in int8 once; activations are quantized on the fly at every
    call. This is ``torch.ao.quantization.quantize_dynamic``, which PyTorch has
    deprecated in favour of torchao; its deprecation warnings are silenced here.

    Its kernels run on the CPU only, so the copy is made on the CPU whatever device
    ``model`` is on (feed it CPU inputs; ``helpers.metrics`` does, from its parameters).
    """
    names = set(block_linears(model))
    copied = copy.deepcopy(model).to("cpu").float()  # a no-op move for a model already on the CPU
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copied, names, dtype=torch.qint8, inplace=True)


def parameter_split(model) -> dict[str, int]:
    """Weights in the block projections vs everything else, plus output rows (for scale counts)."""
    projections = block_linears(model)
    projection_weights = sum(module.in_features * module.out_features for module in projections.values())
    output_rows = sum(module.out_features for module in projections.values())
    seen, everything = set(), 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            everything += parameter.numel()
    return {"projection_weights": projection_weights, "output_rows": output_rows,
            "other_parameters": everything - projection_weights}


def expected_bytes(split: dict[str, int], scheme: str, other_bytes_per_parameter: float = 4.0) -> float:
    """Bytes a scheme should need, worked out from :func:`parameter_split` of the fp32 model.

    ``scheme``: ``fp32``, ``bf16``, ``int8`` (LLM.int8: 1 byte per weight + one fp32
    scale per output row), ``nf4`` (half a byte per weight + one fp32 scale per block
    of 64), ``nf4_double`` (the block scales themselves in 8 bits, with one fp32
    scale per 256 of them) or ``nf4_cpu_packed`` (the layout bitsandbytes switches to at
    the first forward pass on CPUs with AVX-512-BF16: 4-bit weights with one bf16 scale
    per block, double quantization undone). Embeddings and norms stay at
    ``other_bytes_per_parameter``.
    """
    weights, rows, other = split["projection_weights"], split["output_rows"], split["other_parameters"]
    blocks = math.ceil(weights / NF4_BLOCK_SIZE)
    per_scheme = {
        "fp32": weights * 4.0,
        "bf16": weights * 2.0,
        "int8": weights * 1.0 + rows * 4.0,
        "nf4": weights * 0.5 + blocks * 4.0,
        "nf4_double": weights * 0.5 + blocks * 1.0 + math.ceil(blocks / DOUBLE_QUANT_BLOCK_SIZE) * 4.0,
        "nf4_cpu_packed": weights * 0.5 + blocks * 2.0,
    }
    if scheme not in per_scheme:
        raise ValueError(f"Unknown scheme {scheme!r}; use one of {', '.join(per_scheme)}.")
    if scheme == "bf16":
        other_bytes_per_parameter = 2.0
    return per_scheme[scheme] + other * other_bytes_per_parameter


def cpu_repacked(model) -> bool:
    """True when bitsandbytes has re-laid out the model's 4-bit weights for its CPU kernel.

    On CPUs with AVX-512-BF16, ``Linear4bit`` converts its weight at the first
    inference call: a kernel-friendly packing, block scales in bf16, and nested
    (double-quantized) scales expanded back to one bf16 scale per block.
    """
    return any(getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False)
               for module in model.modules() if isinstance(getattr(module, "weight", None), torch.Tensor))


def nf4_levels() -> torch.Tensor:
    """The 16 NormalFloat-4 levels in [-1, 1] (bitsandbytes' table, so the simulation matches it)."""
    from bitsandbytes.functional import get_4bit_type

    return get_4bit_type("nf4", device="cpu").float()


def simulate_nf4(weight: torch.Tensor, block_size: int = NF4_BLOCK_SIZE) -> torch.Tensor:
    """Round ``weight`` to NF4 and back, in full precision: what a 4-bit NF4 layer computes with.

    Each block of ``block_size`` consecutive weights is divided by its largest absolute value
    and every value is replaced by the nearest of the 16 NF4 levels, then scaled back.
    """
    if weight.numel() % block_size:
        raise ValueError(f"The weight has {weight.numel()} values, not a multiple of block_size={block_size}.")
    levels = nf4_levels().to(weight.device)
    blocks = weight.detach().float().reshape(-1, block_size)
    scales = blocks.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    nearest = ((blocks / scales).unsqueeze(-1) - levels).abs().argmin(dim=-1)
    return (levels[nearest] * scales).reshape(weight.shape).to(weight.dtype)


def simulated_nf4_copy(model, block_size: int = NF4_BLOCK_SIZE):
    """A copy of ``model`` whose block projections hold NF4-rounded weights (still stored in fp32)."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for module in block_linears(copied).values():
            module.weight.copy_(simulate_nf4(module.weight, block_size))
    return copied


def bits_per_weight(scheme: str) -> float:
    """Average bits per block-projection weight, scales included (fp32 ... nf4_double)."""
    unit = {"projection_weights": 1_000_000 * NF4_BLOCK_SIZE * DOUBLE_QUANT_BLOCK_SIZE,
            "output_rows": 0, "other_parameters": 0}
    return expected_bytes(unit, scheme) * 8 / unit["projection_weights"]


# --- why a format is fast or slow ------------------------------------------------------

def linear_layer_timings(layers: dict[str, nn.Module], tokens: Sequence[int] = (1, 256), repeats: int = 5,
                         seed: int = 0) -> dict[str, dict[int, float]]:
    """Median milliseconds of one call of each layer, for inputs of each token count.

    ``layers`` maps a format name to the *same* projection taken from each model
    variant. One token is the decode case (a matrix-vector product), 256 tokens the
    prompt / perplexity case (a matrix-matrix product). Inputs are made on each layer's
    own device, and on a GPU every timed call waits for its kernels to finish.
    """
    from .metrics import measure

    quiet_bitsandbytes()
    generator = torch.Generator().manual_seed(seed)
    in_features = {_in_features(layer) for layer in layers.values()}
    if len(in_features) != 1:
        raise ValueError("Pass the same projection from each variant (their in_features differ).")
    width = in_features.pop()
    results: dict[str, dict[int, float]] = {}
    for name, layer in tqdm(layers.items(), desc="layer timings", leave=False):
        results[name] = {}
        for count in tokens:
            dtype = torch.bfloat16 if _weight_dtype(layer) == torch.bfloat16 else torch.float32
            device = module_device(layer)
            inputs = torch.randn(1, count, width, generator=generator).to(device=device, dtype=dtype)

            def call(layer=layer, inputs=inputs, device=device):
                output = layer(inputs)
                synchronize(device)
                return output

            with torch.no_grad():
                timing = measure(call, repeats=repeats, warmup=2)
            results[name][count] = timing.median_s * 1000
    return results


def _in_features(layer) -> int:
    if hasattr(layer, "in_features"):
        return int(layer.in_features)
    weight, _ = layer._packed_params._weight_bias()
    return int(weight.shape[1])


def _weight_dtype(layer):
    weight = getattr(layer, "weight", None)
    return weight.dtype if isinstance(weight, torch.Tensor) else None


# --- the optional GGUF row (llama-cpp-python) ------------------------------------------

def gguf_available() -> bool:
    """True when llama-cpp-python is installed (``import llama_cpp`` would work)."""
    return importlib.util.find_spec("llama_cpp") is not None


def load_gguf(path, context_tokens: int = 1024, threads: int | None = None):
    """Open a GGUF file with llama-cpp-python, keeping the logits of every position (for perplexity)."""
    if not gguf_available():
        raise ImportError("llama-cpp-python is not installed: `pip install llama-cpp-python` to add the GGUF row.")
    import os

    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=context_tokens, n_threads=threads or os.cpu_count(),
                 logits_all=True, verbose=False)


def _all_logits(llama) -> "numpy.ndarray":  # noqa: F821
    scores = getattr(llama, "scores", None)
    if scores is None:
        scores = llama._scores
    return scores[: llama.n_tokens]


def gguf_perplexity(llama, tokenizer, texts: Sequence[str], max_length: int = 256, stride: int | None = None,
                    progress: bool = True) -> float:
    """Perplexity of a llama-cpp model with exactly the windows of ``helpers.metrics.perplexity``.

    Texts are tokenized with the Hugging Face ``tokenizer`` (the GGUF file carries the
    same vocabulary), so every variant scores the same tokens.
    """
    import numpy as np

    from .metrics import document_ids, perplexity_from_nlls, scoring_windows

    per_text = []
    for text in tqdm(texts, desc="perplexity (gguf)", disable=not progress, leave=False):
        ids = document_ids(tokenizer, text)
        nlls = []
        for begin, end, first_target in scoring_windows(len(ids), max_length, stride):
            llama.reset()
            llama.eval(ids[begin:end])
            logits = np.asarray(_all_logits(llama), dtype=np.float64)
            for position in range(first_target, end):
                row = logits[position - begin - 1]
                log_norm = row.max() + np.log(np.exp(row - row.max()).sum())
                nlls.append(log_norm - row[ids[position]])
        per_text.append(np.asarray(nlls))
    return perplexity_from_nlls(per_text)


def gguf_generation_speed(llama, prompts: Sequence[str], max_new_tokens: int, repeats: int = 3,
                          warmup: int = 1) -> dict:
    """Greedy decode speed of a llama-cpp model, exactly ``max_new_tokens`` per prompt (EOS banned)."""
    from .metrics import measure

    ban_end = {llama.token_eos(): -math.inf}

    def one_pass():
        for prompt in prompts:
            llama.create_chat_completion(messages=[{"role": "user", "content": prompt}], max_tokens=max_new_tokens,
                                         temperature=0.0, logit_bias=ban_end)

    timing = measure(one_pass, repeats=repeats, warmup=warmup)
    new_tokens = max_new_tokens * len(prompts)
    return {"tokens_per_s": new_tokens / timing.median_s, "tokens_per_s_min": new_tokens / timing.max_s,
            "tokens_per_s_max": new_tokens / timing.min_s, "new_tokens": new_tokens, "runs": timing.runs}


# --- presenting the comparison ---------------------------------------------------------

def comparison_table(rows: list[dict]) -> str:
    """Markdown table of the variants: bytes, x fp32 bytes, perplexity, x fp32 perplexity, tokens/s."""
    base = rows[0]
    lines = ["| variant | MB in memory | x fp32 bytes | perplexity | x fp32 perplexity | decode tokens/s |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['name']} | skipped: {row['skipped']} | | | | |")
            continue
        lines.append(f"| {row['name']} | {row['bytes'] / 1e6:.0f} | {row['bytes'] / base['bytes']:.2f} | "
                     f"{row['perplexity']:.2f} | {row['perplexity'] / base['perplexity']:.3f} | "
                     f"{row['tokens_per_s']:.1f} |")
    return "\n".join(lines)


def plot_comparison(rows: list[dict], path=None):
    """Three panels side by side: MB in memory, perplexity and decode tokens/s per variant."""
    from .plots import pyplot

    plt = pyplot()
    shown = [row for row in rows if not row.get("skipped")]
    names = [row["name"] for row in shown]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    panels = [("MB in memory", [row["bytes"] / 1e6 for row in shown]),
              ("perplexity on the KB (lower is better)", [row["perplexity"] for row in shown]),
              ("decode tokens/s (batch 1)", [row["tokens_per_s"] for row in shown])]
    for axis, (title, values) in zip(axes, panels):
        bars = axis.bar(names, values, color="#4C72B0")
        bars[0].set_color("#8C8C8C")
        axis.bar_label(bars, fmt="%.3g", fontsize=7)
        axis.set_title(title, fontsize=9)
        axis.tick_params(axis="x", rotation=45, labelsize=7)
        for label in axis.get_xticklabels():
            label.set_horizontalalignment("right")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure
