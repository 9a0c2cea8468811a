"""Pruning: remove weights from the LLM and measure what it costs.

Four ways to choose what to remove, all applied to the ``nn.Linear`` layers inside
the decoder blocks (attention q/k/v/o and MLP gate/up/down projections). The
token embedding and the ``lm_head`` tied to it are left dense, as in the Wanda paper:

* **magnitude** — drop the smallest ``|W|`` in each layer (``torch.nn.utils.prune.l1_unstructured``);
* **Wanda** — drop the smallest ``|W_ij| * ||X_j||_2`` within each output row, where
  ``||X_j||_2`` is the norm of input feature ``j`` over a few calibration texts;
* **2:4 semi-structured** — in every group of 4 consecutive input weights keep the 2
  with the highest Wanda score (the pattern sparse tensor cores accelerate);
* **structured MLP neurons** — delete whole intermediate neurons of each MLP, so the
  matrices really shrink and dense matmuls get cheaper.

Masks are applied with ``torch.nn.utils.prune`` so that pruned weights stay zero
during further training; :func:`make_permanent` folds them into plain weights.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn.utils import prune
from tqdm.auto import tqdm

# Tokens per calibration window (the paper: 2,048). 64 windows of 256 tokens (full profile) fit in the
# training tickets; longer windows would not.
CALIBRATION_WINDOW_TOKENS = 256
# Fraction of every MLP's intermediate neurons removed in the structured-pruning demo.
STRUCTURED_MLP_FRACTION = 0.25


def sweep_sparsities(profile_name: str | None = None) -> tuple[float, ...]:
    """The sparsities swept in the quick or full profile (``Profile.sweep_sparsities`` in helpers/config.py)."""
    from . import config

    return tuple(config.profile(profile_name).sweep_sparsities)


# --- which layers ----------------------------------------------------------------------

def prunable_linears(model) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` layers inside the decoder blocks, by module name.

    Embeddings and ``lm_head`` are not included: they hold the vocabulary, and
    pruning them hurts far more than pruning the blocks.
    """
    layers = {name: module for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and ".layers." in f".{name}."}
    if not layers:
        raise ValueError("No nn.Linear found inside '.layers.' of this model; pass a decoder model "
                         "such as the one from helpers.models.load_llm().")
    return layers


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a fraction in [0, 1), e.g. 0.5 for 50 %; got {sparsity!r}.")


def weight_sparsity(model) -> float:
    """Fraction of exact zeros in the weights of :func:`prunable_linears`."""
    zeros = total = 0
    for module in prunable_linears(model).values():
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    return zeros / total


# --- magnitude -------------------------------------------------------------------------

def magnitude_prune(model, sparsity: float, permanent: bool = True):
    """Zero the ``sparsity`` fraction of smallest-magnitude weights in every prunable layer.

    Uses ``torch.nn.utils.prune.l1_unstructured`` per layer. With ``permanent=False``
    the mask stays attached (``weight_orig`` and ``weight_mask``), so the zeros
    survive optimizer steps. Returns the model.
    """
    _check_sparsity(sparsity)
    for module in prunable_linears(model).values():
        prune.l1_unstructured(module, name="weight", amount=sparsity)
    if permanent:
        make_permanent(model)
    return model


def make_permanent(model):
    """Fold every attached pruning mask into a plain ``weight`` (``prune.remove``)."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    return model


# --- calibration activations -----------------------------------------------------------

def calibration_windows(tokenizer, texts: Sequence[str], count: int, tokens_per_window: int) -> torch.Tensor:
    """Join ``texts`` and cut the token stream into ``count`` windows of ``tokens_per_window``.

    Returns a ``(count, tokens_per_window)`` tensor of token ids, like the paper's
    calibration segments (theirs: 128 x 2048 tokens of C4). Raises ValueError when
    the texts are too short to fill every window.
    """
    if count < 1 or tokens_per_window < 2:
        raise ValueError("count must be >= 1 and tokens_per_window >= 2.")
    ids = tokenizer("\n\n".join(texts), return_tensors="pt").input_ids[0]
    needed = count * tokens_per_window
    if ids.numel() < needed:
        raise ValueError(f"The calibration texts hold {ids.numel()} tokens but {count} windows of "
                         f"{tokens_per_window} need {needed}; pass more texts.")
    return ids[:needed].view(count, tokens_per_window)


def collect_input_norms(model, windows: torch.Tensor, batch_size: int = 4) -> dict[str, torch.Tensor]:
    """L2 norm of every input feature of every prunable layer over the calibration ``windows``.

    Forward hooks add up ``x_j ** 2`` over all calibration tokens; the result maps a
    layer name to a vector of length ``in_features``: ``||X_j||_2`` in the Wanda score.
    """
    layers = prunable_linears(model)
    squares = {name: torch.zeros(module.in_features, dtype=torch.float64) for name, module in layers.items()}

    def hook_for(name):
        def hook(module, inputs, output):
            features = inputs[0].detach().reshape(-1, module.in_features).double()
            squares[name] += features.pow(2).sum(dim=0).cpu()
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers.items()]
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(windows), batch_size), desc="calibration", leave=False):
                model(windows[start:start + batch_size].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: total.sqrt().float() for name, total in squares.items()}


# --- Wanda -----------------------------------------------------------------------------

def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """Wanda importance ``|W_ij| * ||X_j||_2`` for a weight of shape ``(out, in)``."""
    if input_norm.shape != (weight.shape[1],):
        raise ValueError(f"input_norm must have one entry per input feature ({weight.shape[1]}), "
                         f"got shape {tuple(input_norm.shape)}.")
    return weight.detach().abs().float() * input_norm.to(weight.device).float().unsqueeze(0)


def wanda_keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask (True = keep) that drops the lowest-scoring ``sparsity`` fraction of each output row."""
    _check_sparsity(sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    dropped_per_row = int(scores.shape[1] * sparsity)
    if dropped_per_row:
        lowest = scores.argsort(dim=1)[:, :dropped_per_row]  # ascending: the least important first
        keep.scatter_(1, lowest, False)
    return keep


def topk_keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The same per-row selection as :func:`wanda_keep_mask`, written independently with ``torch.topk``."""
    _check_sparsity(sparsity)
    kept_per_row = scores.shape[1] - int(scores.shape[1] * sparsity)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    return keep.scatter(1, scores.topk(kept_per_row, dim=1).indices, True)


def semi_structured_keep_mask(scores: torch.Tensor, keep: int = 2, group: int = 4) -> torch.Tensor:
    """N:M mask: in every ``group`` consecutive input weights of a row keep the ``keep`` best scores."""
    rows, columns = scores.shape
    if not 0 < keep < group or columns % group:
        raise ValueError(f"Need 0 < keep < group and in_features ({columns}) divisible by group ({group}).")
    grouped = scores.reshape(rows, columns // group, group)
    mask = torch.zeros_like(grouped, dtype=torch.bool)
    mask.scatter_(2, grouped.topk(keep, dim=2).indices, True)
    return mask.reshape(rows, columns)


def wanda_masks(model, input_norms: dict[str, torch.Tensor], sparsity: float | None = None,
                pattern: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks for every prunable layer from Wanda scores.

    Give either ``sparsity`` (unstructured, compared per output row) or
    ``pattern=(2, 4)`` (N:M semi-structured).
    """
    if (sparsity is None) == (pattern is None):
        raise ValueError("Pass exactly one of sparsity=0.5 (unstructured) or pattern=(2, 4) (semi-structured).")
    masks = {}
    for name, module in prunable_linears(model).items():
        if name not in input_norms:
            raise ValueError(f"No calibration norms for {name}; run collect_input_norms on this model first.")
        scores = wanda_scores(module.weight, input_norms[name])
        masks[name] = (wanda_keep_mask(scores, sparsity) if pattern is None
                       else semi_structured_keep_mask(scores, *pattern))
    return masks


def apply_masks(model, masks: dict[str, torch.Tensor], permanent: bool = True):
    """Attach keep-masks with ``torch.nn.utils.prune.custom_from_mask``; fold them in when ``permanent``."""
    layers = prunable_linears(model)
    unknown = set(masks) - set(layers)
    if unknown:
        raise ValueError(f"Masks for layers this model does not have: {sorted(unknown)[:3]}...")
    for name, mask in masks.items():
        prune.custom_from_mask(layers[name], name="weight", mask=mask.to(layers[name].weight.device))
    if permanent:
        make_permanent(model)
    return model


def wanda_prune(model, input_norms: dict[str, torch.Tensor], sparsity: float | None = None,
                pattern: tuple[int, int] | None = None, permanent: bool = True):
    """Prune ``model`` in place with Wanda scores (see :func:`wanda_masks`); returns the model."""
    return apply_masks(model, wanda_masks(model, input_norms, sparsity=sparsity, pattern=pattern), permanent)


def masks_agree(first: torch.Tensor, second: torch.Tensor, scores: torch.Tensor) -> bool:
    """True when two keep-masks are equal, except where tied scores made either choice correct.

    Both masks must keep the same number per row, and every weight kept by one mask and
    dropped by the other must have exactly the score of a weight with the opposite fate.
    """
    if first.shape != second.shape or not torch.equal(first.sum(dim=1), second.sum(dim=1)):
        return False
    differ = first != second
    if not differ.any():
        return True
    rows = differ.any(dim=1).nonzero().flatten()
    for row in rows.tolist():
        only_first = scores[row][first[row] & ~second[row]]
        only_second = scores[row][second[row] & ~first[row]]
        if not torch.equal(only_first.sort().values, only_second.sort().values):
            return False
    return True


# --- structured: whole MLP neurons -----------------------------------------------------

def mlp_neuron_scores(model, input_norms: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Importance of every MLP intermediate neuron, per decoder layer index.

    Neuron ``j`` feeds column ``j`` of ``down_proj``; its score is the sum of that
    column's Wanda scores, ``||X_j||_2 * sum_i |W_down[i, j]|``.
    """
    scores = {}
    for index, layer in enumerate(_decoder_layers(model)):
        name = _module_name(model, layer.mlp.down_proj)
        scores[index] = wanda_scores(layer.mlp.down_proj.weight, input_norms[name]).sum(dim=0)
    return scores


def prune_mlp_neurons(model, neuron_scores: dict[int, torch.Tensor], fraction: float):
    """Delete the ``fraction`` least important intermediate neurons of every MLP, in place.

    ``gate_proj`` and ``up_proj`` lose rows, ``down_proj`` loses columns, and
    ``config.intermediate_size`` shrinks, so the model is really smaller and every
    dense matmul in the MLP does less work. Returns the model.
    """
    _check_sparsity(fraction)
    layers = _decoder_layers(model)
    intermediate = layers[0].mlp.down_proj.in_features
    kept = intermediate - int(intermediate * fraction)
    for index, layer in enumerate(layers):
        keep = neuron_scores[index].topk(kept).indices.sort().values.to(layer.mlp.down_proj.weight.device)
        mlp = layer.mlp
        mlp.gate_proj = _select(mlp.gate_proj, rows=keep)
        mlp.up_proj = _select(mlp.up_proj, rows=keep)
        mlp.down_proj = _select(mlp.down_proj, columns=keep)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = kept
    model.config.intermediate_size = kept
    return model


def _select(linear: nn.Linear, rows: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> nn.Linear:
    """A new, smaller Linear holding only the chosen output rows or input columns."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if rows is not None:
        weight = weight[rows]
        bias = bias[rows] if bias is not None else None
    if columns is not None:
        weight = weight[:, columns]
    smaller = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                        device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        smaller.weight.copy_(weight)
        if bias is not None:
            smaller.bias.copy_(bias)
    return smaller


def _decoder_layers(model) -> Iterable:
    for candidate in (getattr(getattr(model, "model", None), "layers", None), getattr(model, "layers", None)):
        if candidate is not None:
            return candidate
    raise ValueError("This model has no .model.layers (decoder blocks); use a Llama-style causal LM.")


def _module_name(model, target) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ValueError("Module not found in model.")


# --- timing a matmul -------------------------------------------------------------------

def linear_timings(in_features: int, out_features: int, tokens: int, sparsity: float = 0.5,
                   repeats: int = 5, seed: int = 0, device: str = "cpu") -> dict:
    """Median seconds of ``x @ W.T`` for a dense W, the same W with ``sparsity`` zeros, and as CSR.

    Shows that zeros inside a dense tensor cost exactly as much as any other number:
    a dense kernel multiplies them all. Returns ``{"dense", "zeros", "csr"}`` of
    :class:`helpers.metrics.Timing`. The tensors are drawn on the CPU (the same numbers
    on every device) and moved to ``device``; on a GPU each call waits for its kernel.
    """
    from .config import synchronize
    from .metrics import measure

    _check_sparsity(sparsity)
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator)
    inputs = torch.randn(tokens, in_features, generator=generator)
    zeroed = weight * wanda_keep_mask(weight.abs(), sparsity)
    weight, inputs, zeroed = (tensor.to(device) for tensor in (weight, inputs, zeroed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        csr = zeroed.to_sparse_csr()

    def timed(operation):
        def call():
            result = operation()
            synchronize(device)
            return result
        return measure(call, repeats=repeats, warmup=2)

    with torch.no_grad():
        return {
            "dense": timed(lambda: inputs @ weight.T),
            "zeros": timed(lambda: inputs @ zeroed.T),
            "csr": timed(lambda: (csr @ inputs.T).T),
        }
