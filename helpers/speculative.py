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

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

from . import config
from .metrics import measure_alternating


@dataclass(frozen=True)
class DecodeCount:
    """One generate call: its new token ids and what the target model was asked to do."""

    tokens: list[int]
    target_passes: int
    tokens_fed: int
    prompt_length: int

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
    """:func:`greedy_ids` with the target's forward passes counted (untimed: the hook costs a little)."""
    with count_forward_passes(model) as counts:
        tokens = greedy_ids(model, prompt_ids, max_new_tokens, eos_token_id, **speculation)
    return DecodeCount(tokens, counts["passes"], counts["tokens_fed"], len(prompt_ids))


def compare_speculative(model, prompts_ids: Sequence[Sequence[int]], max_new_tokens: int,
                        eos_token_id: int | None = None, repeats: int = 3, warmup: int = 1,
                        **speculation) -> dict:
    """Plain greedy against speculative greedy (``speculation`` as in :func:`greedy_ids`) on the same prompts.

    Per prompt: one counted run of each (outputs compared token for token, drafts counted),
    then ``repeats`` alternating timed rounds after ``warmup`` (median seconds kept).
    Returns tokens/s of each (total new tokens / total median seconds), the speed-up, the
    acceptance rate (see the module docstring), ``identical`` per prompt and ``all_identical``,
    and per-prompt ``rows`` for intervals.
    """
    if not speculation:
        raise ValueError("Pass prompt_lookup_num_tokens=... or assistant_model=... to compare against plain greedy.")
    rows = []
    for prompt in prompts_ids:
        plain = counted_decode(model, prompt, max_new_tokens, eos_token_id)
        fast = counted_decode(model, prompt, max_new_tokens, eos_token_id, **speculation)
        timing = measure_alternating(
            {"plain": lambda p=prompt: greedy_ids(model, p, max_new_tokens, eos_token_id),
             "speculative": lambda p=prompt: greedy_ids(model, p, max_new_tokens, eos_token_id, **speculation)},
            repeats=repeats, warmup=warmup)
        rows.append({"new_tokens": len(plain.tokens), "identical": plain.tokens == fast.tokens,
                     "plain_s": timing["plain"].median_s, "speculative_s": timing["speculative"].median_s,
                     "target_passes": fast.target_passes, "drafted": fast.drafted, "accepted": fast.accepted,
                     "speedup": timing["plain"].median_s / timing["speculative"].median_s})
    tokens = sum(row["new_tokens"] for row in rows)
    plain_s = sum(row["plain_s"] for row in rows)
    fast_s = sum(row["speculative_s"] for row in rows)
    drafted = sum(row["drafted"] for row in rows)
    accepted = sum(row["accepted"] for row in rows)
    return {"prompts": len(rows), "new_tokens": tokens,
            "plain_tokens_per_s": tokens / plain_s, "speculative_tokens_per_s": tokens / fast_s,
            "speedup": plain_s / fast_s, "drafted": drafted, "accepted": accepted,
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "identical": [row["identical"] for row in rows], "all_identical": all(row["identical"] for row in rows),
            "rows": rows}


def prompt_ids_for(tokenizer, prompts: Sequence) -> list[list[int]]:
    """Token ids of rendered prompt strings (used as they are) or chats (rendered with the chat template)."""
    from .generation import render_chat

    texts = [prompt if isinstance(prompt, str) else render_chat(tokenizer, prompt) for prompt in prompts]
    return [tokenizer(text, add_special_tokens=False).input_ids for text in texts]

