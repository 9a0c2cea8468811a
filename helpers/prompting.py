"""Prompt engineering for ticket triage: prompt builders, label scoring and the comparison of variants.

The pieces notebook 01 combines:

- **prompt builders** — a bare zero-shot prompt, an instruction prompt with the label list, and
  few-shot chat prompts whose examples are random or chosen by embedding similarity;
- **generation** with :func:`helpers.generation.generate`, and :func:`helpers.labels.parse_label`, which
  maps free text to a label;
- **label scoring** — the log-likelihood of each label as the model's answer, computed with one
  forward pass over the prompt and one batched pass over all label continuations (the prompt's
  KV cache is reused), with optional length normalisation and calibration;
- **comparing variants** — :func:`evaluate_generation`, :func:`evaluate_scoring`, :func:`variants_table`.

Structured output (JSON schema, validation, repair, retry) lives in :mod:`helpers.structured_output`;
the variants plot in :func:`helpers.plots.plot_variants`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Sequence

from tqdm.auto import tqdm

from .data import LABELS
from .generation import count_tokens, forward_argument_names, generate
from .labels import parse_label

COMPANY = "Lumen Cloud, a file sync and storage service"

#: One line per label, in our own words: what a ticket with this label is about.
LABEL_DESCRIPTIONS: dict[str, str] = {
    "billing": "charges, invoices, receipts, payment methods or billing details",
    "refund": "the customer wants money back for a charge",
    "cancel": "the customer wants to stop a subscription or close the account",
    "login": "cannot sign in: two-factor codes, single sign-on, locked account, app sign-in errors",
    "password_reset": "forgot the password or the reset email does not arrive",
    "bug_report": "something in an app is broken, shows wrong results or crashes",
    "feature_request": "asks for a new feature or an improvement",
    "data_export": "wants to download or export data, folders, history or logs",
    "sharing_permissions": "shared links, shared folders, who can view or edit",
    "sync_issue": "files do not sync or upload between devices, conflicts, stuck syncing",
    "security_report": "suspicious activity, a hacked account, phishing or a vulnerability",
    "plan_upgrade": "wants a bigger or paid plan, more storage, seats or features of a higher tier",
}

# --- prompts ---------------------------------------------------------------------------------

def bare_prompt(ticket_text: str) -> str:
    """The zero-shot prompt with no instructions beyond the task: no label list, no format."""
    return f"Classify this customer support ticket.\n\nTicket: {ticket_text}\nCategory:"


def label_list_text(labels: Sequence[str] = LABELS, descriptions: bool = True) -> str:
    """The allowed labels as a bulleted list, each with its description when ``descriptions``."""
    if descriptions:
        return "\n".join(f"- {label}: {LABEL_DESCRIPTIONS[label]}" for label in labels)
    return "\n".join(f"- {label}" for label in labels)


def instructions(labels: Sequence[str] = LABELS, descriptions: bool = True) -> str:
    """Role, label list and output format: the part of an instruction prompt shared by every ticket."""
    return (f"You sort support tickets for {COMPANY}.\n"
            f"Choose exactly one label for the ticket from this list:\n"
            f"{label_list_text(labels, descriptions)}\n"
            f"Answer with the label only, spelled exactly as in the list.")


def instruction_prompt(ticket_text: str, labels: Sequence[str] = LABELS, descriptions: bool = True) -> str:
    """Zero-shot with instructions: role, the label list (with descriptions) and the output format."""
    return f"{instructions(labels, descriptions)}\n\nTicket: {ticket_text}\nLabel:"


def few_shot_messages(ticket_text: str, examples: Sequence, labels: Sequence[str] = LABELS,
                      descriptions: bool = True) -> list[dict]:
    """A chat with the instructions as system message and each example as a user/assistant turn.

    ``examples`` are objects with ``text`` and ``label`` (e.g. :class:`helpers.data.Ticket`). Each
    example becomes ``user: Ticket: ...`` / ``assistant: <label>``, so the model sees the answer
    format it must produce, then the real ticket comes as the last user turn.
    """
    messages = [{"role": "system", "content": instructions(labels, descriptions)}]
    for example in examples:
        messages.append({"role": "user", "content": f"Ticket: {example.text}"})
        messages.append({"role": "assistant", "content": example.label})
    messages.append({"role": "user", "content": f"Ticket: {ticket_text}"})
    return messages


# --- choosing few-shot examples ----------------------------------------------------------------

def random_examples(pool: Sequence, count: int, k: int, seed: int = 0) -> list[list]:
    """``count`` independent sets of ``k`` examples drawn at random (seeded) from ``pool``."""
    if k < 0 or k > len(pool):
        raise ValueError(f"k must be between 0 and the pool size ({len(pool)}), got {k}.")
    rng = random.Random(seed)
    return [rng.sample(list(pool), k) for _ in range(count)]


class SimilarExamples:
    """Pick the ``k`` pool examples whose embeddings are closest (cosine) to each query.

    ``embedder`` is a SentenceTransformer (``helpers.models.load_embedder()``); the pool is embedded
    once, queries at :meth:`nearest`. Examples are returned least similar first, so the most similar
    one sits right before the question, where a small model pays the most attention.
    """

    def __init__(self, pool: Sequence, embedder, batch_size: int = 64, progress: bool = True):
        if not pool:
            raise ValueError("The example pool is empty; pass the training tickets.")
        self.pool = list(pool)
        self.embedder = embedder
        self.vectors = embedder.encode([example.text for example in self.pool], batch_size=batch_size,
                                       normalize_embeddings=True, convert_to_tensor=True,
                                       show_progress_bar=progress)

    def nearest(self, texts: Sequence[str], k: int) -> list[list]:
        """For each text, its ``k`` most similar pool examples (least similar first)."""
        if not 0 < k <= len(self.pool):
            raise ValueError(f"k must be between 1 and the pool size ({len(self.pool)}), got {k}.")
        queries = self.embedder.encode(list(texts), normalize_embeddings=True, convert_to_tensor=True,
                                       show_progress_bar=False)
        similarities = queries @ self.vectors.T
        top = similarities.topk(k, dim=1).indices.tolist()
        return [[self.pool[index] for index in reversed(row)] for row in top]


def majority_label(examples: Sequence) -> str:
    """The most frequent label among ``examples``; ties go to the label seen last (the most similar)."""
    if not examples:
        raise ValueError("No examples to vote with.")
    counts: dict[str, int] = {}
    for example in examples:
        counts[example.label] = counts.get(example.label, 0) + 1
    best = max(counts.values())
    return next(example.label for example in reversed(examples) if counts[example.label] == best)


# --- label scoring ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelScores:
    """Log-likelihood of each candidate answer after one prompt."""

    candidates: tuple[str, ...]
    log_likelihood: tuple[float, ...]  # sum of token log-probabilities
    token_counts: tuple[int, ...]

    def mean_log_likelihood(self) -> tuple[float, ...]:
        """Log-likelihood per token: removes the bias against labels that need more tokens."""
        return tuple(total / count for total, count in zip(self.log_likelihood, self.token_counts))


def score_candidates(model, tokenizer, rendered_prompt: str, candidates: Sequence[str]) -> LabelScores:
    """Log-likelihood of each of ``candidates`` as the continuation of ``rendered_prompt``.

    Two forward passes however many candidates there are: the prompt once (keeping its KV cache),
    then every candidate's tokens in one right-padded batch that attends to the cached prompt.
    The first candidate token is scored from the prompt's last logits.
    """
    import torch

    if not candidates:
        raise ValueError("Pass at least one candidate answer.")
    device = next(model.parameters()).device
    prompt_ids = tokenizer(rendered_prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
    if prompt_ids.shape[1] == 0:
        raise ValueError("The prompt is empty; the first candidate token needs something to follow.")
    candidate_ids = [tokenizer(candidate, add_special_tokens=False).input_ids for candidate in candidates]
    if any(len(ids) == 0 for ids in candidate_ids):
        raise ValueError("Every candidate must be a non-empty string.")
    count, longest = len(candidate_ids), max(len(ids) for ids in candidate_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = torch.full((count, longest), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((count, longest), dtype=torch.bool, device=device)
    for row, ids in enumerate(candidate_ids):
        tokens[row, :len(ids)] = torch.tensor(ids, device=device)
        mask[row, :len(ids)] = True

    cache_argument, keep_argument = forward_argument_names(model)
    with torch.no_grad():
        # Only the last position's logits are needed from the prompt pass.
        prompt_out = model(prompt_ids, use_cache=True, **({keep_argument: 1} if keep_argument else {}))
        first = torch.log_softmax(prompt_out.logits[0, -1].float(), dim=-1)[tokens[:, 0]]
        total = first
        if longest > 1:
            cache = getattr(prompt_out, "cache", None) or prompt_out.past_key_values
            cache.batch_repeat_interleave(count)
            # Right padding is harmless: a causal model never lets a real token attend to later pads.
            attention = torch.ones((count, prompt_ids.shape[1] + longest - 1), dtype=torch.long, device=device)
            rest = model(tokens[:, :-1], attention_mask=attention, use_cache=False, **{cache_argument: cache})
            log_probs = torch.log_softmax(rest.logits.float(), dim=-1)
            picked = log_probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
            total = total + (picked * mask[:, 1:]).sum(dim=1)
    return LabelScores(tuple(candidates), tuple(total.tolist()), tuple(len(ids) for ids in candidate_ids))


def pick_label(scores: LabelScores, labels: Sequence[str] = LABELS, normalise: str = "sum",
               baseline: LabelScores | None = None) -> str:
    """The label with the best score.

    ``normalise``: ``"sum"`` (total log-likelihood) or ``"mean"`` (per token). ``baseline``: the
    scores after a content-free ticket; subtracting them calibrates away the model's prior
    preference for some labels whatever the ticket says.
    """
    if normalise not in ("sum", "mean"):
        raise ValueError("normalise must be 'sum' or 'mean'.")
    if len(labels) != len(scores.candidates):
        raise ValueError(f"{len(labels)} labels for {len(scores.candidates)} scored candidates.")
    values = scores.log_likelihood if normalise == "sum" else scores.mean_log_likelihood()
    if baseline is not None:
        prior = baseline.log_likelihood if normalise == "sum" else baseline.mean_log_likelihood()
        values = tuple(value - offset for value, offset in zip(values, prior))
    return labels[max(range(len(values)), key=values.__getitem__)]


def score_tickets(model, tokenizer, rendered_prompts: Sequence[str], candidates: Sequence[str] = LABELS,
                  desc: str = "scoring labels", progress: bool = True) -> tuple[list[LabelScores], float]:
    """:func:`score_candidates` for every prompt; returns ``(scores, seconds)``."""
    start = time.perf_counter()
    scores = [score_candidates(model, tokenizer, prompt, candidates)
              for prompt in tqdm(rendered_prompts, desc=desc, disable=not progress, leave=False)]
    return scores, time.perf_counter() - start


# --- comparing prompt variants ---------------------------------------------------------------

@dataclass
class VariantResult:
    """One prompt variant measured on a ticket set: accuracy beside what it costs."""

    name: str
    method: str  # "generate" or "score"
    predictions: list[str]
    accuracy: float
    prompt_tokens: float  # mean tokens the model reads per ticket
    seconds_per_ticket: float  # wall time of the whole (batched) evaluation / tickets
    answers: list[str] | None = None  # raw generated text, for "generate"
    latency_s: float | None = None  # median seconds for one ticket alone (batch 1), see measure_latency


def _accuracy(predictions: Sequence[str], tickets: Sequence) -> float:
    from .metrics import accuracy

    return accuracy(list(predictions), [ticket.label for ticket in tickets])


def evaluate_generation(model, tokenizer, name: str, render, tickets: Sequence, max_new_tokens: int,
                        batch_size: int = 16, progress: bool = True) -> VariantResult:
    """Generate an answer for each ticket with ``render(ticket) -> prompt text``, parse it to a label
    with :func:`parse_label` and score it against the ticket's label."""
    prompts = [render(ticket) for ticket in tickets]
    start = time.perf_counter()
    answers = generate(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size, desc=name, progress=progress)
    seconds = time.perf_counter() - start
    predictions = [parse_label(answer) for answer in answers]
    return VariantResult(name, "generate", predictions, _accuracy(predictions, tickets),
                         sum(count_tokens(tokenizer, p) for p in prompts) / len(prompts),
                         seconds / len(tickets), answers=answers)


def evaluate_scoring(model, tokenizer, name: str, render, tickets: Sequence, labels: Sequence[str] = LABELS,
                     progress: bool = True) -> tuple[VariantResult, list[LabelScores]]:
    """Label scoring for each ticket (sum of log-probabilities); returns the result and the raw
    scores, so other read-outs (:func:`rescore`) cost nothing extra."""
    prompts = [render(ticket) for ticket in tickets]
    scores, seconds = score_tickets(model, tokenizer, prompts, labels, desc=name, progress=progress)
    predictions = [pick_label(score, labels) for score in scores]
    result = VariantResult(name, "score", predictions, _accuracy(predictions, tickets),
                           sum(count_tokens(tokenizer, p) for p in prompts) / len(prompts), seconds / len(tickets))
    return result, scores


def rescore(result: VariantResult, name: str, scores: Sequence[LabelScores], tickets: Sequence,
            labels: Sequence[str] = LABELS, normalise: str = "sum",
            baseline: LabelScores | None = None) -> VariantResult:
    """The same label scores read out another way (per-token mean, calibrated): same cost, new accuracy."""
    predictions = [pick_label(score, labels, normalise, baseline) for score in scores]
    return VariantResult(name, "score", predictions, _accuracy(predictions, tickets), result.prompt_tokens,
                         result.seconds_per_ticket)


def generation_classifier(model, tokenizer, render, max_new_tokens: int):
    """``ticket -> label`` for one ticket at a time by generation (for latency measurements)."""
    def classify(ticket) -> str:
        answers = generate(model, tokenizer, [render(ticket)], max_new_tokens, batch_size=1, progress=False)
        return parse_label(answers[0])
    return classify


def scoring_classifier(model, tokenizer, render, labels: Sequence[str] = LABELS, normalise: str = "sum",
                       baseline: LabelScores | None = None):
    """``ticket -> label`` for one ticket at a time by label scoring (for latency measurements)."""
    def classify(ticket) -> str:
        return pick_label(score_candidates(model, tokenizer, render(ticket), labels), labels, normalise, baseline)
    return classify


def measure_latency(classify, tickets: Sequence, repeats: int = 3) -> float:
    """Median seconds to classify one ticket alone (batch 1), over ``repeats`` different tickets after
    one untimed warm-up; everything a request needs (example search, prompt, model) is inside."""
    import itertools

    from .metrics import measure

    if not tickets:
        raise ValueError("Pass at least one ticket to time.")
    cycle = itertools.cycle(tickets)
    return measure(lambda: classify(next(cycle)), repeats=repeats, warmup=1).median_s


def variants_table(results: Sequence[VariantResult], sample_size: int | None = None, split: str = "test") -> str:
    """A Markdown table: accuracy, prompt tokens, batched seconds per ticket and batch-1 latency.

    With ``sample_size``, a footer names the ``split`` the rows were scored on and what one ticket is worth.
    """
    lines = ["| variant | method | accuracy | prompt tokens | s/ticket (batched) | latency, batch 1 (s) |",
             "|---|---|---|---|---|---|"]
    for result in results:
        latency = f"{result.latency_s:.2f}" if result.latency_s is not None else "—"
        lines.append(f"| {result.name} | {result.method} | {result.accuracy:.1%} | {result.prompt_tokens:.0f} | "
                     f"{result.seconds_per_ticket:.2f} | {latency} |")
    if sample_size is not None:
        lines.append(f"\n{sample_size} {split} tickets: one ticket is {1 / sample_size:.1%} of accuracy.")
    return "\n".join(lines)
