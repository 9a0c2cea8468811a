"""Speculative decoding, measured: prompt-lookup decoding and assisted generation against plain greedy.

Decoding one token reads every weight once, so checking several *proposed* tokens in one
forward pass costs little more than producing one. Speculative decoding drafts a few
tokens cheaply and lets the model (the *target*) verify them all in one pass: under
greedy decoding it keeps the longest prefix of the draft that equals its own argmax,
plus one token of its own, so the output is exactly what plain greedy decoding gives.
transformers ships two drafters, both batch size 1:

- **prompt lookup** (``model.generate(..., prompt_lookup_num_tokens=N)``): find the last few
  generated tokens earlier in the prompt and propose the ``N`` tokens that followed them
  there; it pays when the answer copies from its context (RAG);
- **assisted generation** (``model.generate(..., assistant_model=small_model)``): a smaller
  model with the same tokenizer proposes the draft.

**Acceptance rate** (how it is counted here). A forward hook on the target counts its
forward passes ``P`` and the tokens fed to them. Each verification pass yields the
accepted draft tokens plus exactly one token of the target's own, so accepted draft
tokens = new tokens - ``P``. The tokens fed to pass ``i`` are its draft plus what was not
in the KV cache yet: the whole prompt in the first pass, the previous pass's own token
afterwards; so drafted tokens = tokens fed - prompt length - (``P`` - 1).
Acceptance rate = accepted / drafted (0 when nothing was drafted). With the target as
its own assistant every draft is accepted; the unit tests check that it then reads 1.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

from . import config


@dataclass(frozen=True)
class DecodeCount:
    """One generate call: its new token ids and what the target model was asked to do."""

    tokens: list[int]
    target_passes: int
    tokens_fed: int
    prompt_length: int
    seconds: float = 0.0

    @property
    def drafted(self) -> int:
        """Draft tokens the target verified (0 for plain decoding)."""
        return max(self.tokens_fed - self.prompt_length - (self.target_passes - 1), 0)

    @property
    def accepted(self) -> int:
        """Draft tokens the target kept (every pass adds one token of its own on top)."""
        return max(len(self.tokens) - self.target_passes, 0)


@contextmanager
def count_forward_passes(model):
    """Count ``model``'s forward passes and the tokens fed to them: ``with ... as counts:`` gives a dict."""
    counts = {"passes": 0, "tokens_fed": 0}

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        counts["passes"] += 1
        counts["tokens_fed"] += int(ids.shape[1])

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counts
    finally:
        handle.remove()


def greedy_ids(model, prompt_ids: Sequence[int], max_new_tokens: int, eos_token_id: int | None = None,
               **speculation) -> list[int]:
    """Greedy new token ids of one prompt; ``speculation`` is passed to ``generate``
    (``prompt_lookup_num_tokens=10`` or ``assistant_model=draft``); none means plain greedy."""
    import torch

    ids = torch.tensor([list(prompt_ids)], device=config.module_device(model))
    options = dict(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                   pad_token_id=eos_token_id if eos_token_id is not None else 0)
    if eos_token_id is None:
        options["min_new_tokens"] = max_new_tokens
    with torch.no_grad():
        output = model.generate(ids, attention_mask=torch.ones_like(ids), **options, **speculation)
    return output[0, ids.shape[1]:].tolist()


def counted_decode(model, prompt_ids: Sequence[int], max_new_tokens: int, eos_token_id: int | None = None,
                   **speculation) -> DecodeCount:
    """:func:`greedy_ids` with the target's forward passes counted and the call timed (wall-clock seconds).

    The counting hook adds two integer additions per forward pass, far below the timer's noise,
    so one run gives both the counts and the time."""
    with count_forward_passes(model) as counts:
        start = time.perf_counter()
        tokens = greedy_ids(model, prompt_ids, max_new_tokens, eos_token_id, **speculation)
        seconds = time.perf_counter() - start
    return DecodeCount(tokens, counts["passes"], counts["tokens_fed"], len(prompt_ids), seconds)


def decode_variants(model, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int,
                    variants: dict[str, dict], eos_token_id: int | None = None, warmup: bool = True,
                    progress: bool = False) -> list[dict[str, DecodeCount]]:
    """Decode every prompt once with every variant (``{"plain": {}, "lookup 5": {"prompt_lookup_num_tokens": 5}}``),
    counted and timed, and return one ``{variant: DecodeCount}`` per prompt.

    The order of the variants rotates from prompt to prompt (prompt ``i`` starts with variant
    ``i mod len(variants)``), so slow drift of the machine hits every variant alike; with
    ``warmup`` each variant first decodes a few tokens of the first prompt untimed.
    """
    from tqdm.auto import tqdm

    if not variants:
        raise ValueError("Pass at least one variant, e.g. {'plain': {}}.")
    names = list(variants)
    if warmup and prompts_ids:
        for name in names:
            greedy_ids(model, prompts_ids[0], min(max_new_tokens, 8), eos_token_id, **variants[name])
    rows = []
    for index, prompt in enumerate(tqdm(prompts_ids, desc="decoding", disable=not progress)):
        row = {}
        for step in range(len(names)):
            name = names[(index + step) % len(names)]
            row[name] = counted_decode(model, prompt, max_new_tokens, eos_token_id, **variants[name])
        rows.append({name: row[name] for name in names})
    return rows


def summarise(rows: Sequence[dict[str, DecodeCount]], variant: str, baseline: str = "plain", seed: int = 0) -> dict:
    """Speed, acceptance and identity of ``variant`` against ``baseline`` over the prompts of :func:`decode_variants`.

    Speed-up = total baseline seconds / total variant seconds over all prompts, with a
    paired bootstrap over prompts (95 %); tokens/s (each variant's total new tokens / total
    seconds) and the acceptance rate (accepted / drafted draft tokens, pooled) get the same
    bootstrap. ``identical`` compares the two outputs token for token, per prompt.
    """
    from .metrics import paired_bootstrap

    if not rows:
        raise ValueError("No prompts to summarise.")
    base_tokens = [len(row[baseline].tokens) for row in rows]
    fast_tokens = [len(row[variant].tokens) for row in rows]
    base_s = [row[baseline].seconds for row in rows]
    fast_s = [row[variant].seconds for row in rows]
    drafted = [row[variant].drafted for row in rows]
    accepted = [row[variant].accepted for row in rows]
    identical = [row[baseline].tokens == row[variant].tokens for row in rows]

    def ratio(top, bottom):
        return top.sum() / bottom.sum() if bottom.sum() else float("nan")

    total_drafted = sum(drafted)
    acceptance = (paired_bootstrap(ratio, accepted, drafted, seed=seed) if total_drafted
                  else {"value": 0.0, "interval": (0.0, 0.0), "n": len(rows), "kind": "no drafts"})
    return {"prompts": len(rows), "new_tokens": sum(fast_tokens), "baseline_new_tokens": sum(base_tokens),
            "baseline_tokens_per_s": paired_bootstrap(ratio, base_tokens, base_s, seed=seed),
            "tokens_per_s": paired_bootstrap(ratio, fast_tokens, fast_s, seed=seed),
            "speedup": paired_bootstrap(ratio, base_s, fast_s, seed=seed),
            "drafted": total_drafted, "accepted": sum(accepted), "acceptance_rate": acceptance,
            "identical": identical, "all_identical": all(identical),
            "per_prompt_speedup": [b / f for b, f in zip(base_s, fast_s)],
            "per_prompt_acceptance": [a / d if d else 0.0 for a, d in zip(accepted, drafted)]}


def compare_speculative(model, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int,
                        eos_token_id: int | None = None, warmup: bool = True, progress: bool = False,
                        **speculation) -> dict:
    """Plain greedy against speculative greedy (``speculation`` as in :func:`greedy_ids`) on the same prompts:
    :func:`decode_variants` with the two variants, then :func:`summarise` (speculative against plain)."""
    if not speculation:
        raise ValueError("Pass prompt_lookup_num_tokens=... or assistant_model=... to compare against plain greedy.")
    rows = decode_variants(model, prompts_ids, max_new_tokens, {"plain": {}, "speculative": speculation},
                           eos_token_id, warmup=warmup, progress=progress)
    return summarise(rows, "speculative", "plain")


def expected_speedup(acceptance: float, draft_tokens: int, cost_ratio: float) -> float:
    """Leviathan et al. 2023 (Theorem 3.8): expected decode speed-up of speculative decoding.

    Each draft token is accepted with probability ``acceptance`` (independently), the
    drafter proposes ``draft_tokens`` per verification pass and one drafter step costs
    ``cost_ratio`` of a target forward pass. A pass then yields
    (1 - a^(g+1)) / (1 - a) tokens on average and costs g c + 1 target passes.
    """
    if not 0.0 <= acceptance <= 1.0 or draft_tokens < 1 or cost_ratio < 0:
        raise ValueError("Need 0 <= acceptance <= 1, draft_tokens >= 1 and cost_ratio >= 0.")
    if acceptance == 1.0:
        tokens_per_pass = draft_tokens + 1.0
    else:
        tokens_per_pass = (1 - acceptance ** (draft_tokens + 1)) / (1 - acceptance)
    return tokens_per_pass / (draft_tokens * cost_ratio + 1)


def layer_dropped_draft(model, keep_layers: Sequence[int], draft_tokens: int = 5):
    """A drafter for assisted generation: a copy of ``model`` with only the decoder layers ``keep_layers``.

    It shares the tokenizer, embeddings and head, so no training is needed (and none is done:
    expect a poor drafter). It drafts exactly ``draft_tokens`` tokens per verification pass
    (constant schedule, no early stop on low confidence), the setting the Leviathan et al.
    formula (:func:`expected_speedup`) describes.
    """
    import copy

    import torch

    layers = list(keep_layers)
    total = len(model.model.layers)
    if not layers or sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= total:
        raise ValueError(f"keep_layers must be increasing, distinct layer indices below {total}.")
    draft = copy.deepcopy(model)
    draft.model.layers = torch.nn.ModuleList([draft.model.layers[index] for index in layers])
    draft.config.num_hidden_layers = len(layers)
    if getattr(draft.config, "layer_types", None):
        draft.config.layer_types = [draft.config.layer_types[index] for index in layers]
    for position, layer in enumerate(draft.model.layers):
        layer.self_attn.layer_idx = position  # the KV cache is indexed by position in the new stack
    draft.generation_config.num_assistant_tokens = draft_tokens
    draft.generation_config.num_assistant_tokens_schedule = "constant"
    draft.generation_config.assistant_confidence_threshold = 0.0
    return draft


def top1_agreement(target, draft, token_ids: Sequence[int]) -> float:
    """Fraction of positions of ``token_ids`` where ``draft`` and ``target`` predict the same next token
    (teacher forcing, one forward pass each): an estimate of a greedy draft's per-token acceptance."""
    import torch

    ids = torch.tensor([list(token_ids)], device=config.module_device(target))
    with torch.no_grad():
        target_next = target(ids).logits.argmax(-1)
        draft_next = draft(ids.to(config.module_device(draft))).logits.argmax(-1).to(target_next.device)
    return float((target_next == draft_next).float().mean())


def first_divergence(plain: Sequence[int], other: Sequence[int]) -> int | None:
    """Index of the first token where two outputs differ (a length difference counts), or None if equal."""
    for index, (a, b) in enumerate(zip(plain, other)):
        if a != b:
            return index
    return None if len(plain) == len(other) else min(len(plain), len(other))


def top2_margin(model, prompt_ids: Sequence[int], generated: Sequence[int], position: int) -> float:
    """Logit gap between the target's best and second-best next token at ``position`` of ``generated``
    (teacher-forced on the prompt and ``generated[:position]``): near 0 is a near-tie."""
    import torch

    ids = torch.tensor([list(prompt_ids) + list(generated[:position])], device=config.module_device(model))
    with torch.no_grad():
        top = model(ids).logits[0, -1].float().topk(2).values
    return float(top[0] - top[1])


def prompt_ids_for(tokenizer, prompts: Sequence) -> list[list[int]]:
    """Token ids of rendered prompt strings (used as they are) or chats (rendered with the chat template)."""
    from .generation import render_chat

    texts = [prompt if isinstance(prompt, str) else render_chat(tokenizer, prompt) for prompt in prompts]
    return [tokenizer(text, add_special_tokens=False).input_ids for text in texts]

