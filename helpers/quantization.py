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

import contextlib
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
    return (isinstance(module, (nn.Linear, GroupQuantizedLinear)) or type(module).__name__.startswith("Linear"))


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
                         seed: int = 0, activations: torch.Tensor | None = None) -> dict[str, dict[int, float]]:
    """Median milliseconds of one call of each layer, for inputs of each token count.

    ``layers`` maps a format name to the *same* projection taken from each model
    variant. One token is the decode case (a matrix-vector product), 256 tokens the
    prompt / perplexity case (a matrix-matrix product). ``activations`` (tokens x width)
    are real inputs of that projection (see :func:`capture_inputs`); the first ``count``
    rows are fed, so outlier features are there as in a real run. Without them the inputs
    are random normal values (no outliers). Inputs are made on each layer's own device,
    and on a GPU every timed call waits for its kernels to finish.
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
            if activations is None:
                inputs = torch.randn(1, count, width, generator=generator)
            elif activations.shape[0] < count or activations.shape[-1] != width:
                raise ValueError(f"Pass at least {count} activation rows of width {width}.")
            else:
                inputs = activations[:count].reshape(1, count, width)
            inputs = inputs.to(device=device, dtype=dtype)

            def call(layer=layer, inputs=inputs, device=device):
                output = layer(inputs)
                synchronize(device)
                return output

            with torch.no_grad():
                timing = measure(call, repeats=repeats, warmup=2)
            results[name][count] = timing.median_s * 1000
    return results


def capture_inputs(model, module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The inputs ``module`` receives (tokens x features, fp32 on the CPU) when ``model`` reads ``ids``."""
    captured = []
    handle = module.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(ids.reshape(1, -1).to(module_device(model)))
    finally:
        handle.remove()
    return captured[0].reshape(-1, captured[0].shape[-1]).float().cpu()


def outlier_columns(activations: torch.Tensor, threshold: float = 6.0) -> int:
    """Feature columns holding at least one value above ``threshold`` in magnitude (LLM.int8's fp16 path)."""
    return int((activations.abs() > threshold).any(dim=0).sum())


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
    """Markdown table of the variants: bytes (whole model, and per component where a row has
    ``components``), x fp32 bytes, perplexity, x fp32 perplexity, decode tokens/s ("—" when not timed)."""
    base = rows[0]
    parts = list(base.get("components", {}))
    part_headers = "".join(f" {part} MB |" for part in parts)
    lines = [f"| variant | MB in memory |{part_headers} x fp32 bytes | perplexity | x fp32 perplexity "
             "| decode tokens/s |",
             "|---|---|" + "---|" * len(parts) + "---|---|---|---|"]
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['name']} | skipped: {row['skipped']} |" + " |" * (len(parts) + 4))
            continue
        components = "".join(f" {row['components'][part] / 1e6:.1f} |" if "components" in row else " |"
                             for part in parts)
        speed = f"{row['tokens_per_s']:.1f}" if row.get("tokens_per_s") is not None else "—"
        lines.append(f"| {row['name']} | {row['bytes'] / 1e6:.0f} |{components} {row['bytes'] / base['bytes']:.2f} | "
                     f"{row['perplexity']:.2f} | {row['perplexity'] / base['perplexity']:.3f} | {speed} |")
    return "\n".join(lines)


def plot_comparison(rows: list[dict], path=None):
    """Three panels side by side: MB in memory, perplexity and decode tokens/s per variant."""
    from .plots import pyplot

    plt = pyplot()
    shown = [row for row in rows if not row.get("skipped")]
    names = [row["name"] for row in shown]
    timed = [row for row in shown if row.get("tokens_per_s") is not None]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    panels = [("MB in memory", [row["bytes"] / 1e6 for row in shown]),
              ("perplexity on the KB (lower is better)", [row["perplexity"] for row in shown]),
              ("decode tokens/s (batch 1)", [row["tokens_per_s"] for row in timed])]
    for axis, (title, values) in zip(axes, panels):
        labels = names if len(values) == len(names) else [row["name"] for row in timed]
        bars = axis.bar(labels, values, color="#4C72B0")
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


# --- whole-model 4-bit-class variants: group-wise codes for every matrix, the tied embedding included --------------

GROUP_SCHEMES = {"int4_affine": 4, "nf4": 4, "int8_symmetric": 8}


def quantize_groups(weight: torch.Tensor, scheme: str, group_size: int) -> dict:
    """Round a 2-D ``weight`` group by group; returns its codes (one per weight, unpacked) and scales.

    Groups are ``group_size`` consecutive weights *within a row*, so any set of rows (an
    embedding lookup) can be dequantized on its own. Scales and minimums are fp16, as in
    GGUF's block formats.

    * ``int4_affine`` — 16 evenly spaced levels from the group's minimum to its maximum:
      ``w ~ minimum + scale * q``, q in 0..15 (the layout of GGUF's Q4_1).
    * ``nf4`` — the 16 NormalFloat levels times the group's largest absolute value (bitsandbytes' NF4).
    * ``int8_symmetric`` — ``w ~ scale * q``, q in -127..127, scale = largest absolute value / 127
      (the layout of GGUF's Q8_0).
    """
    if scheme not in GROUP_SCHEMES:
        raise ValueError(f"Unknown scheme {scheme!r}; use one of {', '.join(GROUP_SCHEMES)}.")
    rows, columns = weight.shape
    if columns % group_size:
        raise ValueError(f"Rows of {columns} weights do not split into groups of {group_size}.")
    groups = weight.detach().float().reshape(rows, columns // group_size, group_size)
    tiny = torch.finfo(torch.float16).tiny
    if scheme == "int4_affine":
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scale = ((high - low) / 15).clamp_min(tiny).half()
        minimum = low.half()
        codes = ((groups - minimum.float().unsqueeze(-1)) / scale.float().unsqueeze(-1)).round().clamp(0, 15)
        return {"codes": codes.to(torch.uint8).reshape(rows, columns), "scale": scale, "minimum": minimum}
    if scheme == "int8_symmetric":
        scale = (groups.abs().amax(dim=-1) / 127).clamp_min(tiny).half()
        codes = (groups / scale.float().unsqueeze(-1)).round().clamp(-127, 127)
        return {"codes": codes.to(torch.int8).reshape(rows, columns), "scale": scale, "minimum": None}
    scale = groups.abs().amax(dim=-1).clamp_min(tiny).half()
    levels = nf4_levels().to(weight.device)
    normalized = groups / scale.float().unsqueeze(-1)
    codes = torch.bucketize(normalized, (levels[1:] + levels[:-1]) / 2)  # nearest of the sorted levels
    return {"codes": codes.to(torch.uint8).reshape(rows, columns), "scale": scale, "minimum": None}


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor | None, scheme: str,
                      group_size: int) -> torch.Tensor:
    """The fp32 weights that :func:`quantize_groups`' codes stand for (any subset of rows)."""
    rows, columns = codes.shape
    grouped = codes.reshape(rows, columns // group_size, group_size)
    if scheme == "nf4":
        values = nf4_levels().to(codes.device)[grouped.long()]
    else:
        values = grouped.float()
    values = values * scale.float().unsqueeze(-1)
    if minimum is not None:
        values = values + minimum.float().unsqueeze(-1)
    return values.reshape(rows, columns)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes (0..15) per byte along the last dimension (which must be even)."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`."""
    return torch.stack((packed & 15, packed >> 4), dim=-1).reshape(*packed.shape[:-1], -1)


class GroupQuantizedLinear(nn.Module):
    """A linear layer holding only group-wise codes and fp16 scales (weight-only quantization).

    4-bit codes are packed two per byte. Each call dequantizes the weight to fp32 and
    multiplies: simple and exact about *what* is computed, but it spends time a fused
    kernel (llama.cpp, bitsandbytes, torchao) would not, so time it only as such.
    """

    def __init__(self, weight: torch.Tensor, scheme: str, group_size: int, bias: torch.Tensor | None = None):
        super().__init__()
        quantized = quantize_groups(weight, scheme, group_size)
        codes = quantized["codes"]
        self.scheme, self.group_size = scheme, group_size
        self.out_features, self.in_features = weight.shape
        self.register_buffer("codes", pack_nibbles(codes) if GROUP_SCHEMES[scheme] == 4 else codes)
        self.register_buffer("scale", quantized["scale"])
        self.register_buffer("minimum", quantized["minimum"])
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def dequantized_weight(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        codes, scale = self.codes, self.scale
        minimum = self.minimum
        if rows is not None:
            codes, scale = codes[rows], scale[rows]
            minimum = None if minimum is None else minimum[rows]
        if GROUP_SCHEMES[self.scheme] == 4:
            codes = unpack_nibbles(codes)
        return dequantize_groups(codes, scale, minimum, self.scheme, self.group_size)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(inputs, self.dequantized_weight().to(inputs.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, scheme={self.scheme}, group_size={self.group_size}"


class GroupQuantizedEmbedding(nn.Module):
    """Token embedding that reads the rows it needs from a :class:`GroupQuantizedLinear` (a tied ``lm_head``).

    The codes are stored once, in the ``lm_head``; this module holds no tensor of its own,
    so the tied matrix is counted (and kept in memory) once.
    """

    def __init__(self, source: GroupQuantizedLinear):
        super().__init__()
        object.__setattr__(self, "source", source)  # not a submodule: the lm_head owns the storage
        self.num_embeddings, self.embedding_dim = source.out_features, source.in_features

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.source.dequantized_weight(rows=ids.reshape(-1)).reshape(*ids.shape, self.embedding_dim)


def group_quantized_copy(model, layer_schemes: dict[str, tuple[str, int]], embedding: tuple[str, int] | None):
    """A copy of ``model`` whose block projections (and tied embedding / ``lm_head``) hold group-wise codes.

    ``layer_schemes`` maps each block projection name (:func:`block_linears`) to
    ``(scheme, group_size)``; ``embedding`` does the same for the tied embedding matrix
    (``None`` keeps it in fp32). The embedding and ``lm_head`` share one set of codes.
    """
    copied = copy.deepcopy(model).to("cpu").float()
    projections = block_linears(copied)
    missing = set(layer_schemes) - set(projections)
    if missing:
        raise ValueError(f"Not block projections of this model: {sorted(missing)[:3]}")
    for name, (scheme, group_size) in layer_schemes.items():
        parent_name, _, child = name.rpartition(".")
        layer = projections[name]
        setattr(copied.get_submodule(parent_name), child, GroupQuantizedLinear(layer.weight, scheme, group_size,
                                                                               layer.bias))
    if embedding is not None:
        embed, head = copied.get_input_embeddings(), copied.get_output_embeddings()
        if head is None or head.weight.data_ptr() != embed.weight.data_ptr():
            raise ValueError("The embedding is quantized here only when it is tied to lm_head.")
        shared = GroupQuantizedLinear(head.weight, *embedding, head.bias)
        copied.lm_head = shared
        copied.model.embed_tokens = GroupQuantizedEmbedding(shared)
    return copied


def group_quantized_bytes(shape: tuple[int, int], scheme: str, group_size: int) -> float:
    """Bytes :class:`GroupQuantizedLinear` holds for a ``shape`` matrix: codes plus fp16 scales (and minimums)."""
    rows, columns = shape
    groups = rows * columns // group_size
    return rows * columns * GROUP_SCHEMES[scheme] / 8 + groups * 2 * (2 if scheme == "int4_affine" else 1)


def component_bytes(model) -> dict[str, int]:
    """Whole-model bytes split into the tied embedding / ``lm_head``, the block projections and the rest.

    Uses :func:`helpers.metrics.model_bytes` on each part (shared tensors counted once),
    so the three add up to ``model_bytes(model)``.
    """
    from .metrics import model_bytes

    parts = [module for module in (model.get_input_embeddings(), model.get_output_embeddings()) if module is not None]
    # a GroupQuantizedEmbedding keeps its codes in the lm_head it reads
    parts += [module.source for module in parts if isinstance(module, GroupQuantizedEmbedding)]
    embedding = model_bytes(nn.ModuleList(parts))
    projections = model_bytes(nn.ModuleList(block_linears(model).values()))
    total = model_bytes(model)
    return {"embedding / lm_head": embedding, "block projections": projections,
            "rest": total - embedding - projections}


@contextlib.contextmanager
def rounded_in_place(model, layer_schemes: dict[str, tuple[str, int]], embedding: tuple[str, int] | None = None):
    """Within the ``with`` block, ``model``'s weights hold what a group-quantized copy would compute with.

    Same arguments as :func:`group_quantized_copy`, but the weights are rounded in place
    (kept in fp32) and restored on exit: a fast way to *score* a plan on calibration text
    without building it. The tied embedding / ``lm_head`` matrix is rounded once, for both uses.
    """
    projections = block_linears(model)
    targets = [(projections[name].weight, scheme) for name, scheme in layer_schemes.items()]
    if embedding is not None:
        targets.append((model.get_input_embeddings().weight, embedding))
    saved = [weight.detach().clone() for weight, _ in targets]
    try:
        with torch.no_grad():
            for weight, (scheme, group_size) in targets:
                quantized = quantize_groups(weight, scheme, group_size)
                weight.copy_(dequantize_groups(quantized["codes"], quantized["scale"], quantized["minimum"], scheme,
                                               group_size))
        yield model
    finally:
        with torch.no_grad():
            for (weight, _), original in zip(targets, saved):
                weight.copy_(original)


def calibration_nll(model, ids: torch.Tensor) -> float:
    """Mean next-token NLL (nats) of ``model`` on calibration windows ``ids`` (batch x tokens)."""
    with torch.no_grad():
        return float(model(input_ids=ids.to(module_device(model)), labels=ids.to(module_device(model))).loss)


def layer_sensitivity(model, ids: torch.Tensor, scheme: str = "nf4", group_size: int = 64) -> list[float]:
    """NLL increase (nats per token) on calibration windows ``ids`` when one decoder layer alone is rounded.

    Layer ``i``'s projections are rounded to ``scheme`` in place and restored after
    (:func:`rounded_in_place`). Pass calibration text, never the text variants are finally scored on.
    """
    projections = block_linears(model)
    baseline = calibration_nll(model, ids)
    increases = []
    for index in tqdm(range(len(model.model.layers)), desc="layer sensitivity", leave=False):
        plan = {name: (scheme, group_size) for name in projections if f".layers.{index}." in f".{name}."}
        with rounded_in_place(model, plan):
            increases.append(calibration_nll(model, ids) - baseline)
    return increases


def plan_bytes(model, layer_schemes: dict[str, tuple[str, int]], embedding: tuple[str, int] | None) -> float:
    """Whole-model bytes :func:`group_quantized_copy` would hold for this plan (everything else stays fp32)."""
    from .metrics import model_bytes

    projections = block_linears(model)
    total = model_bytes(model)
    for name, (scheme, group_size) in layer_schemes.items():
        weight = projections[name].weight
        total += group_quantized_bytes(tuple(weight.shape), scheme, group_size) - weight.numel() * 4
    if embedding is not None:
        weight = model.get_input_embeddings().weight
        total += group_quantized_bytes(tuple(weight.shape), *embedding) - weight.numel() * 4
    return total


def plot_bytes_vs_perplexity(rows: list[dict], max_bytes_ratio: float = 0.20, max_perplexity_ratio: float = 1.10,
                             path=None):
    """Every variant as a point: whole-model bytes and perplexity, both relative to the first row (fp32).

    The shaded box is the goal: at most ``max_bytes_ratio`` of the bytes at no more than
    ``max_perplexity_ratio`` of the perplexity. Rows with ``interval`` (a perplexity ratio
    interval) get error bars; rows with ``open`` (e.g. scored on calibration text) are drawn as open circles.
    """
    from .plots import pyplot

    plt = pyplot()
    base = rows[0]
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    goal = f"goal: <= {max_bytes_ratio:.2f}x bytes, <= {max_perplexity_ratio:.2f}x perplexity"
    axis.add_patch(plt.Rectangle((0, 0), max_bytes_ratio, max_perplexity_ratio, color="#55A868", alpha=0.15,
                                 label=goal))
    for row in rows:
        if row.get("skipped"):
            continue
        x, y = row["bytes"] / base["bytes"], row["perplexity"] / base["perplexity"]
        error = None
        if row.get("interval") is not None:
            error = [[y - row["interval"][0]], [row["interval"][1] - y]]
        color = "#C44E52" if row.get("highlight") else "#4C72B0"
        axis.errorbar(x, y, yerr=error, fmt="o", color=color, capsize=3,
                      markerfacecolor="none" if row.get("open") else color)
        axis.annotate(row["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    axis.set_xlabel("whole-model bytes (x fp32)")
    axis.set_ylabel("perplexity (x fp32, lower is better)")
    axis.set_xlim(0, 1.05)
    ratios = [row["perplexity"] / base["perplexity"] for row in rows if not row.get("skipped")]
    axis.set_ylim(0.95, max(1.2, min(max(ratios), 3.5) * 1.05))
    axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure
