"""GPU correctness check: every device-sensitive helper, and one core measurement per technique, on CUDA.

Run on a machine with an NVIDIA GPU::

    make gpu-check            # or: python -m helpers.gpu_check

Each check loads what it needs on ``cuda`` (the bundled models, as everywhere else),
runs the helper the notebooks use, and prints what it checked and what it measured.
Timings wait for the GPU (``torch.cuda.synchronize``) before the clock is read. Sizes
are small on purpose: the whole run takes a few minutes, and each check has a time
budget it reports against (the total must stay under :data:`TIME_LIMIT_S`).

Exit codes: 0 when every check passed, 1 when any check failed (each failure is
printed with its error). Without a CUDA device nothing is run and the exit code is 0,
with the line ``no CUDA device: gpu-check not run`` (so ``make gpu-check`` on a laptop
is harmless); pass ``--require-gpu`` to make that case exit 2 instead.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

TIME_LIMIT_S = 8 * 60
NO_GPU_MESSAGE = "no CUDA device: gpu-check not run"
PERPLEXITY_ARTICLES = 3
PERPLEXITY_TOKENS = 256
NEW_TOKENS = 16


@dataclass
class Outcome:
    """What one check did: ``ok``, the lines it measured, the error if any, and its seconds."""

    name: str
    ok: bool
    lines: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


class Context:
    """Objects shared between checks (the LLM and its tokenizer are loaded once)."""

    def __init__(self, device: str):
        self.device = device
        self._llm = None

    def llm(self):
        if self._llm is None:
            from . import models

            self._llm = models.load_llm(device=self.device)
        return self._llm

    def texts(self, count: int = PERPLEXITY_ARTICLES) -> list[str]:
        from . import data

        return [document.text for document in data.load_kb()[:count]]

    def timed(self, fn: Callable[[], object], repeats: int = 5) -> float:
        """Median seconds of ``fn()`` after one warm-up, the GPU synchronised around every call."""
        from .config import synchronize
        from .metrics import measure

        def call():
            result = fn()
            synchronize(self.device)
            return result

        synchronize(self.device)
        return measure(call, repeats=repeats, warmup=1).median_s


def _on_device(module_or_tensor, device: str) -> bool:
    """True when a module's parameters (or a tensor) live on ``device``'s type (``cuda:1`` counts as ``cuda``)."""
    import torch

    from .config import module_device

    found = module_or_tensor.device if isinstance(module_or_tensor, torch.Tensor) else module_device(module_or_tensor)
    return found.type == device.split(":")[0]


def check_llm(context: Context) -> list[str]:
    """Load the LLM on the GPU; greedy generation; perplexity on a few KB articles; a timed forward pass."""
    import torch

    from . import metrics
    from .generation import generate_greedy

    model, tokenizer = context.llm()
    assert _on_device(model, context.device), f"load_llm put the model on {next(model.parameters()).device}"
    answer = generate_greedy(model, tokenizer, ["How long does Lumen Cloud keep deleted files?"], NEW_TOKENS)[0]
    assert answer.strip(), "greedy generation returned nothing"
    perplexity = metrics.perplexity(model, tokenizer, context.texts(), max_length=PERPLEXITY_TOKENS, progress=False)
    assert 1.0 < perplexity < 1000.0, f"perplexity {perplexity:.1f} is implausible for this model"
    window = tokenizer(context.texts(1)[0], return_tensors="pt").input_ids[:, :PERPLEXITY_TOKENS].to(model.device)
    with torch.no_grad():
        seconds = context.timed(lambda: model(window))
    speed = metrics.generation_speed(model, tokenizer, ["Summarise the refund policy."], NEW_TOKENS, repeats=3)
    return [f"greedy answer: {answer.strip()[:70]!r}",
            f"perplexity on {PERPLEXITY_ARTICLES} KB articles ({PERPLEXITY_TOKENS}-token windows): {perplexity:.2f}",
            f"{window.shape[1]}-token forward pass: {seconds * 1e3:.2f} ms; "
            f"greedy decode: {speed['tokens_per_s']:.1f} tokens/s (batch 1)"]


def check_bitsandbytes(context: Context) -> list[str]:
    """LLM.int8 and NF4 (double quant) loads through transformers' BitsAndBytesConfig on CUDA."""
    import torch
    from transformers import BitsAndBytesConfig

    from . import metrics, models, quantization

    quantization.quiet_bitsandbytes()
    fp32_model, tokenizer = context.llm()
    fp32_bytes = metrics.model_bytes(fp32_model)
    fp32_perplexity = metrics.perplexity(fp32_model, tokenizer, context.texts(), max_length=PERPLEXITY_TOKENS,
                                         progress=False)
    configs = {"LLM.int8": BitsAndBytesConfig(load_in_8bit=True),
               "NF4 + dq": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)}
    lines, layers = [], {"fp32": fp32_model.model.layers[0].mlp.gate_proj}
    loaded = {}
    for name, quantization_config in configs.items():
        model, _ = models.load_llm(quantization_config=quantization_config, device=context.device)
        assert _on_device(model, context.device), f"{name} weights are not on the GPU"
        perplexity = metrics.perplexity(model, tokenizer, context.texts(), max_length=PERPLEXITY_TOKENS,
                                        progress=False)
        ratio = perplexity / fp32_perplexity
        assert ratio < 2.0, f"{name} perplexity {perplexity:.2f} vs fp32 {fp32_perplexity:.2f}"
        size = metrics.model_bytes(model)
        assert size < fp32_bytes, f"{name} holds {size} bytes, not fewer than fp32's {fp32_bytes}"
        lines.append(f"{name}: {size / 1e6:.0f} MB ({size / fp32_bytes:.2f}x fp32), perplexity {perplexity:.2f} "
                     f"({ratio:.3f}x fp32)")
        layers[name] = model.model.layers[0].mlp.gate_proj
        loaded[name] = model
    layers["int8 dynamic (CPU)"] = quantization.dynamic_int8(fp32_model).model.layers[0].mlp.gate_proj
    timings = quantization.linear_layer_timings(layers, tokens=(1, PERPLEXITY_TOKENS), repeats=10)
    lines.append("gate_proj of layer 0, ms for 1 / 256 tokens: " + ", ".join(
        f"{name} {row[1]:.3f} / {row[PERPLEXITY_TOKENS]:.3f}" for name, row in timings.items()))
    del loaded
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return lines


def check_pruning(context: Context) -> list[str]:
    """Wanda calibration on the GPU model, Wanda and magnitude masks on one layer, timed matmuls on CUDA."""
    import torch
    from torch.nn.utils import prune

    from . import data, pruning

    model, tokenizer = context.llm()
    windows = pruning.calibration_windows(tokenizer, [ticket.text for ticket in data.load_tickets("train")[:200]],
                                          count=4, tokens_per_window=128)
    norms = pruning.collect_input_norms(model, windows, batch_size=2)
    name = next(iter(pruning.prunable_linears(model)))
    layer = pruning.prunable_linears(model)[name]
    assert norms[name].shape == (layer.in_features,) and torch.isfinite(norms[name]).all()
    scores = pruning.wanda_scores(layer.weight, norms[name])
    wanda = pruning.wanda_keep_mask(scores, 0.5)
    assert pruning.masks_agree(wanda, pruning.topk_keep_mask(scores, 0.5), scores), "Wanda masks disagree"
    original = layer.weight.detach().clone()
    prune.custom_from_mask(layer, name="weight", mask=wanda)
    wanda_zeros = float((layer.weight == 0).float().mean())
    prune.remove(layer, "weight")
    magnitude = pruning.wanda_keep_mask(original.abs(), 0.5)
    overlap = float((wanda == magnitude).float().mean())
    with torch.no_grad():
        layer.weight.copy_(original)  # leave the shared model dense for the next checks
    timings = pruning.linear_timings(576, 1536, tokens=256, sparsity=0.5, repeats=10, device=context.device)
    return [f"{name}: Wanda 50 % -> {wanda_zeros:.3f} zeros; Wanda and magnitude masks agree on {overlap:.1%}",
            "576x1536 matmul, 256 tokens, ms: " + ", ".join(f"{kind} {timing.median_s * 1e3:.3f}"
                                                           for kind, timing in timings.items())]


def check_lora(context: Context) -> list[str]:
    """One LoRA forward/backward/optimizer step with peft on the GPU."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from . import data, finetune

    base, tokenizer = context.llm()
    lora_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                                 task_type="CAUSAL_LM"))
    losses = finetune.train_lora(lora_model, tokenizer, data.load_tickets("train")[:16], steps=3, batch_size=4,
                                 warmup_steps=1, progress=False)
    trainable = [parameter for parameter in lora_model.parameters() if parameter.requires_grad]
    assert all(_on_device(parameter, context.device) for parameter in trainable), "LoRA weights are not on the GPU"
    assert all(torch.isfinite(torch.tensor(losses))), f"non-finite LoRA loss: {losses}"
    trained, total = finetune.trainable_parameters(lora_model)
    del lora_model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return [f"3 LoRA steps on {context.device}, loss {' -> '.join(f'{loss:.3f}' for loss in losses)}; "
            f"{trained:,} of {total:,} parameters trainable"]


def check_encoders(context: Context) -> list[str]:
    """MiniLM embedder and ticket classifier forward passes; student vs teacher speed (distillation)."""
    import torch

    from . import distillation, finetune, models

    embedder = models.load_embedder(device=context.device)
    vectors = embedder.encode(["My files stopped syncing.", "Sync is stuck on my laptop."], convert_to_tensor=True)
    similarity = float(torch.nn.functional.cosine_similarity(vectors[0], vectors[1], dim=0))
    assert _on_device(vectors, context.device), f"the embedder returned vectors on {vectors.device}"
    assert similarity > 0.3, f"cosine {similarity:.3f} between two near-identical tickets"
    teacher, tokenizer = finetune.new_ticket_classifier()
    assert _on_device(teacher, context.device), "the classifier is not on the GPU"
    logits = finetune.classifier_logits(teacher, tokenizer, ["I was charged twice this month."])
    assert logits.shape[-1] == 12
    layers = distillation.every_other_layer(teacher.config.num_hidden_layers)
    student, student_tokenizer = distillation.build_student(teacher, tokenizer, layers)
    assert _on_device(student, context.device), "the student was not put beside its teacher"
    texts = ["I cannot log in after resetting my password."] * 32
    speed = distillation.compare_speed({"teacher": (teacher, tokenizer), "student": (student, student_tokenizer)},
                                       texts, batch_size=32, rounds=2, repeats=3, progress=False)
    ratio = speed["teacher"]["seconds_per_text"] / speed["student"]["seconds_per_text"]
    return [f"embedder cosine(similar tickets) = {similarity:.3f}; classifier logits {tuple(logits.shape)}",
            f"student ({len(layers)} layers) vs teacher, batch 32: {ratio:.2f}x faster"]


def check_caching(context: Context) -> list[str]:
    """A prefix KV cache built from CPU token ids for the GPU model."""
    from . import caching

    model, tokenizer = context.llm()
    ids = tokenizer("Lumen Cloud keeps deleted files for a while.", return_tensors="pt").input_ids  # on the CPU
    cache = caching.build_prefix_cache(model, ids)
    per_token = caching.cache_bytes(cache) / ids.shape[1]
    expected = caching.kv_cache_bytes_per_token(model.config, bytes_per_value=4.0)
    assert abs(per_token - expected) / expected < 0.01, f"{per_token} bytes/token, expected {expected}"
    return [f"prefix cache: {per_token:,.0f} bytes per token (fp32), as computed from the config"]


def check_fsdp(context: Context) -> list[str]:
    """NCCL available; a two-step FSDP2 run under torchrun on the GPUs (one rank per GPU, at most 2)."""
    import torch
    import torch.distributed as dist

    from . import sharding

    assert dist.is_available() and dist.is_nccl_available(), "this torch build has no NCCL"
    ranks = min(2, torch.cuda.device_count())
    report = sharding.run_fsdp_training(world_size=ranks, steps=2, timeout_s=240)
    assert report["backend"] == "nccl" and report["device"].startswith("cuda"), report
    seconds = report["step_seconds"]
    return [f"FSDP2 on {ranks} GPU rank(s), backend {report['backend']}: losses "
            f"{', '.join(f'{loss:.3f}' for loss in report['losses'])}; last step {seconds[-1]:.2f} s"]


CHECKS: dict[str, Callable[[Context], list[str]]] = {
    "llm": check_llm, "bitsandbytes": check_bitsandbytes, "pruning": check_pruning, "lora": check_lora,
    "encoders": check_encoders, "caching": check_caching, "fsdp": check_fsdp,
}


def run_checks(checks: dict[str, Callable[[Context], list[str]]], context: Context,
               print_line: Callable[[str], None] = print) -> list[Outcome]:
    """Run every check, catching failures so that one broken helper does not hide the others."""
    outcomes = []
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            outcome = Outcome(name, True, list(check(context)))
        except Exception as error:  # noqa: BLE001 - report every failure, keep going
            outcome = Outcome(name, False, error=f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=4)}")
        outcome.seconds = time.perf_counter() - start
        print_line(f"[{'PASS' if outcome.ok else 'FAIL'}] {name} ({outcome.seconds:.1f} s): {check.__doc__.strip()}")
        for line in outcome.lines:
            print_line(f"       {line}")
        if not outcome.ok:
            print_line("       " + outcome.error.replace("\n", "\n       ").rstrip())
        outcomes.append(outcome)
    return outcomes


def main(argv: list[str] | None = None, cuda_available: Callable[[], bool] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the workbook's device-sensitive helpers on a CUDA GPU.")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(CHECKS)}")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 (not 0) when there is no CUDA device")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(CHECKS)
    unknown = [name for name in chosen if name not in CHECKS]
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available
    if not cuda_available():
        print(NO_GPU_MESSAGE)
        return 2 if args.require_gpu else 0

    import torch

    from . import config, machine

    config.seed_everything(0)
    print(f"gpu-check on {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} GPU(s)), "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    machine.print_machine()
    started = time.perf_counter()
    outcomes = run_checks({name: CHECKS[name] for name in chosen}, Context("cuda"))
    total = time.perf_counter() - started
    failed = [outcome.name for outcome in outcomes if not outcome.ok]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} checks passed in {total:.0f} s"
          + (f" (over the {TIME_LIMIT_S // 60}-minute budget)" if total > TIME_LIMIT_S else "")
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
