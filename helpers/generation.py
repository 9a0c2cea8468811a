"""Generation with the workbook LLM: one home for chat rendering and greedy generation, used by every notebook.

- :func:`render_chat` — the exact text the model reads (chat template applied, ending where the
  assistant's answer starts); :func:`chat_as_text` — a chat as plain ``ROLE: content`` text for printing;
- :func:`generate` — greedy answers for many prompts (rendered strings or chat messages), in
  length-sorted batches, in the input order;
- :func:`generate_greedy` — one batch, as it is (the primitive the others and the speed
  measurements use); :func:`encode_prompts` — left-padded token ids for it;
- :func:`count_tokens` and :func:`forward_argument_names` (the KV-cache and keep-logits keywords of
  ``model.forward``, which changed across transformers versions).
"""

from __future__ import annotations

import inspect
from typing import Sequence

from tqdm.auto import tqdm


def render_chat(tokenizer, prompt) -> str:
    """The exact text the model reads: ``prompt`` (a string or a list of chat messages) in the chat
    template, ending where the assistant's answer starts."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if not messages:
        raise ValueError("Pass a prompt string or a non-empty list of chat messages.")
    if not getattr(tokenizer, "chat_template", None):
        return "\n\n".join(message["content"] for message in messages) + "\n"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_as_text(messages: Sequence[dict]) -> str:
    """A chat as plain text (``ROLE: content`` blocks), for printing what the model receives."""
    return "\n\n".join(f"{message['role'].upper()}: {message['content']}" for message in messages)


def encode_prompts(tokenizer, prompts: Sequence[str], chat: bool = True):
    """Tokenize prompts (wrapped in the chat template when ``chat``), left-padded for generation."""
    tokenizer.padding_side = "left"
    if chat and getattr(tokenizer, "chat_template", None):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True) for prompt in prompts]
    else:
        texts = list(prompts)
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)


def greedy_new_ids(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, use_cache: bool = True,
                   exact_length: bool = False, chat: bool = True):
    """Greedy generation for one batch of prompts; returns the new token ids (batch x new tokens).

    With ``chat=True`` each prompt is a user message wrapped in the chat template; with
    ``chat=False`` prompts are used as they are (already rendered). ``exact_length`` forces
    exactly ``max_new_tokens`` new tokens (for speed measurements).
    """
    import torch

    inputs = encode_prompts(tokenizer, prompts, chat=chat).to(next(model.parameters()).device)
    options = dict(max_new_tokens=max_new_tokens, do_sample=False, use_cache=use_cache,
                   pad_token_id=tokenizer.pad_token_id)
    if exact_length:
        options["min_new_tokens"] = max_new_tokens
    with torch.no_grad():
        output = model.generate(**inputs, **options)
    return output[:, inputs["input_ids"].shape[1]:]


def generate_greedy(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, use_cache: bool = True,
                    exact_length: bool = False, chat: bool = True) -> list[str]:
    """Greedy generation for one batch of prompts (:func:`greedy_new_ids`); returns the decoded new text."""
    new_tokens = greedy_new_ids(model, tokenizer, prompts, max_new_tokens, use_cache, exact_length, chat)
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def count_tokens(tokenizer, rendered_text: str) -> int:
    """Number of tokens in an already rendered prompt."""
    return len(tokenizer(rendered_text, add_special_tokens=False).input_ids)


def generate(model, tokenizer, prompts: Sequence, max_new_tokens: int, batch_size: int = 8,
             desc: str = "generating", progress: bool = True, strip: bool = False) -> list[str]:
    """Greedy answers for ``prompts``, in batches of similar length; answers come back in the input order.

    Each prompt is either a rendered string (see :func:`render_chat`; used as it is) or a chat
    (a list of role/content messages, rendered here). Sorting by length keeps left padding
    (wasted work) small. ``strip=True`` removes white space around each answer.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1.")
    texts = [prompt if isinstance(prompt, str) else render_chat(tokenizer, prompt) for prompt in prompts]
    lengths = [count_tokens(tokenizer, text) for text in texts]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    answers: list[str] = [""] * len(texts)
    for begin in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = order[begin:begin + batch_size]
        outputs = generate_greedy(model, tokenizer, [texts[i] for i in chunk], max_new_tokens, chat=False)
        for index, output in zip(chunk, outputs):
            answers[index] = output.strip() if strip else output
    return answers


def forward_argument_names(model) -> tuple[str, str | None]:
    """Names of the KV-cache and keep-last-logits arguments of ``model.forward`` (they changed
    across transformers versions: ``past_key_values`` -> ``cache``, ``num_logits_to_keep`` ->
    ``logits_to_keep``)."""
    parameters = inspect.signature(model.forward).parameters
    cache_argument = "cache" if "cache" in parameters else "past_key_values"
    keep_argument = next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters), None)
    return cache_argument, keep_argument
