"""Prompt engineering for ticket triage: prompt builders, label parsing, label scoring and JSON checks.

The pieces notebook 01 combines:

- **prompt builders** — a bare zero-shot prompt, an instruction prompt with the label list, and
  few-shot chat prompts whose examples are random or chosen by embedding similarity;
- **generation** in length-sorted batches, and :func:`parse_label`, which maps free text to a label;
- **label scoring** — the log-likelihood of each label as the model's answer, computed with one
  forward pass over the prompt and one batched pass over all label continuations (the prompt's
  KV cache is reused), with optional length normalisation and calibration;
- **structured output** — :func:`validate_triage_json` (a strict schema check),
  :func:`repair_json` (mechanical fixes) and :func:`retry_messages` (re-ask with the error).
"""

from __future__ import annotations

import difflib
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .data import LABELS

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

#: Words that point to a label when a model answers in free text. Checked after exact label
#: names; the earliest match in the answer wins, so "refund for my cancelled plan" -> refund.
LABEL_KEYWORDS: dict[str, tuple[str, ...]] = {
    "billing": ("billing", "bill", "invoice", "payment", "charge", "receipt", "pricing"),
    "refund": ("refund", "money back", "reimburse", "chargeback"),
    "cancel": ("cancel", "unsubscribe", "close my account", "terminate", "termination"),
    "login": ("login", "log in", "log-in", "sign in", "sign-in", "signin", "two-factor", "2fa",
              "authentication", "locked out"),
    "password_reset": ("password reset", "reset password", "reset my password", "forgot password",
                       "forgotten password", "password"),
    "bug_report": ("bug", "crash", "glitch", "defect", "broken", "error", "technical issue"),
    "feature_request": ("feature", "suggestion", "enhancement", "improvement", "would like to see"),
    "data_export": ("export", "download", "backup", "takeout"),
    "sharing_permissions": ("sharing", "share", "permission", "access rights", "collaborat"),
    "sync_issue": ("sync", "synchroni", "not uploading", "upload"),
    "security_report": ("security", "vulnerab", "phishing", "hacked", "hack", "breach", "suspicious",
                        "exploit", "xss"),
    "plan_upgrade": ("upgrade", "premium", "higher tier", "more storage", "plan"),
}

UNKNOWN = "unknown"
PRIORITIES: tuple[str, ...] = ("low", "medium", "high")

#: Lumen Cloud's triage rule for the JSON examples: the tickets carry no priority, so the few-shot
#: examples show a priority that follows from the label (accounts at risk first, wishes last).
PRIORITY_BY_LABEL: dict[str, str] = {
    "security_report": "high", "login": "high", "sync_issue": "high",
    "password_reset": "medium", "bug_report": "medium", "billing": "medium", "refund": "medium",
    "data_export": "medium", "sharing_permissions": "medium",
    "cancel": "low", "plan_upgrade": "low", "feature_request": "low",
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


def render_chat(tokenizer, prompt) -> str:
    """The exact text the model reads: ``prompt`` (a string or a list of chat messages) in the chat
    template, ending where the assistant's answer starts."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if not messages:
        raise ValueError("Pass a prompt string or a non-empty list of chat messages.")
    if not getattr(tokenizer, "chat_template", None):
        return "\n\n".join(message["content"] for message in messages) + "\n"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def count_tokens(tokenizer, rendered_text: str) -> int:
    """Number of tokens in an already rendered prompt."""
    return len(tokenizer(rendered_text, add_special_tokens=False).input_ids)


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


# --- generation and parsing ------------------------------------------------------------------

def generate(model, tokenizer, rendered_prompts: Sequence[str], max_new_tokens: int, batch_size: int = 8,
             desc: str = "generating", progress: bool = True) -> tuple[list[str], float]:
    """Greedy answers for already rendered prompts, in batches of similar length.

    Returns ``(answers, seconds)``: answers in the input order and the wall time of all batches.
    Sorting by length keeps left padding (wasted work) small.
    """
    from .metrics import generate_greedy

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1.")
    lengths = [count_tokens(tokenizer, text) for text in rendered_prompts]
    order = sorted(range(len(rendered_prompts)), key=lengths.__getitem__)
    answers: list[str] = [""] * len(rendered_prompts)
    start = time.perf_counter()
    for begin in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = order[begin:begin + batch_size]
        outputs = generate_greedy(model, tokenizer, [rendered_prompts[i] for i in chunk], max_new_tokens,
                                  chat=False)
        for index, output in zip(chunk, outputs):
            answers[index] = output
    return answers, time.perf_counter() - start


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace("-", " ").replace("_", " ")).strip()


def parse_label(answer: str, labels: Sequence[str] = LABELS, with_rule: bool = False):
    """Map a free-text answer to one of ``labels``, or ``"unknown"``.

    Rules, first match wins: (1) ``exact`` — the answer is a label (case, quotes, punctuation,
    spaces vs underscores ignored); (2) ``mention`` — a label name appears in the answer (the
    earliest one); (3) ``keyword`` — a word from :data:`LABEL_KEYWORDS` appears (the earliest;
    longer keywords win at the same position); (4) ``fuzzy`` — the first words are a near-spelling
    of a label (``"biling"``); otherwise ``unknown``. With ``with_rule=True`` returns
    ``(label, rule)``.
    """
    def result(label: str, rule: str):
        return (label, rule) if with_rule else label

    if not isinstance(answer, str):
        raise ValueError(f"parse_label expects the model's answer as a string, got {type(answer).__name__}.")
    text = _normalise(answer)
    by_name = {_normalise(label): label for label in labels}
    stripped = re.sub(r"^[\s\"'`*:.\-]+|[\s\"'`*:.!\-]+$", "", text)
    if stripped in by_name:
        return result(by_name[stripped], "exact")

    mentions = [(match.start(), -len(name), label) for name, label in by_name.items()
                for match in [re.search(rf"\b{re.escape(name)}\b", text)] if match]
    if mentions:
        return result(min(mentions)[2], "mention")

    hits = []
    for label in labels:
        for keyword in LABEL_KEYWORDS.get(label, ()):
            position = text.find(keyword)
            if position >= 0 and (position == 0 or not text[position - 1].isalnum()):
                hits.append((position, -len(keyword), label))
    if hits:
        return result(min(hits)[2], "keyword")

    words = stripped.split()
    for size in (2, 1):
        if len(words) >= size:
            close = difflib.get_close_matches(" ".join(words[:size]), list(by_name), n=1, cutoff=0.8)
            if close:
                return result(by_name[close[0]], "fuzzy")
    return result(UNKNOWN, "none")


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


def _forward_argument_names(model) -> tuple[str, str | None]:
    """Names of the KV-cache and keep-last-logits arguments of ``model.forward`` (they changed
    across transformers versions: ``past_key_values`` -> ``cache``, ``num_logits_to_keep`` ->
    ``logits_to_keep``)."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    cache_argument = "cache" if "cache" in parameters else "past_key_values"
    keep_argument = next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters), None)
    return cache_argument, keep_argument


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

    cache_argument, keep_argument = _forward_argument_names(model)
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


# --- structured output -----------------------------------------------------------------------

@dataclass(frozen=True)
class JsonCheck:
    """Result of :func:`validate_triage_json`: the parsed record when valid, else the reason."""

    valid: bool
    record: dict | None
    error: str


def triage_schema_text() -> str:
    """The JSON format asked for, as shown to the model."""
    return ('{"label": "<one label from the list>", "priority": "<low, medium or high>"}')


def validate_triage_json(text: str, labels: Sequence[str] = LABELS,
                         priorities: Sequence[str] = PRIORITIES) -> JsonCheck:
    """Strict check of a triage answer: the whole answer (surrounding spaces aside) is one JSON object
    with exactly the keys ``label`` (one of ``labels``) and ``priority`` (one of ``priorities``)."""
    if not isinstance(text, str):
        raise ValueError(f"validate_triage_json expects a string, got {type(text).__name__}.")
    try:
        record = json.loads(text.strip())
    except json.JSONDecodeError as error:
        return JsonCheck(False, None, f"not valid JSON ({error.msg} at character {error.pos})")
    if not isinstance(record, dict):
        return JsonCheck(False, None, f"expected a JSON object, got a {type(record).__name__}")
    keys = set(record)
    if keys != {"label", "priority"}:
        missing, extra = sorted({"label", "priority"} - keys), sorted(keys - {"label", "priority"})
        parts = ([f"missing key(s) {missing}"] if missing else []) + ([f"unexpected key(s) {extra}"] if extra else [])
        return JsonCheck(False, None, "; ".join(parts))
    if record["label"] not in labels:
        return JsonCheck(False, None, f"label {record['label']!r} is not one of the allowed labels")
    if record["priority"] not in priorities:
        return JsonCheck(False, None, f"priority {record['priority']!r} is not one of {', '.join(priorities)}")
    return JsonCheck(True, record, "")


def _first_object(text: str) -> str | None:
    """The first ``{...}`` with balanced braces (outside strings); closes it if the text ends early."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_string, escaped = 0, False, False
    for position in range(start, len(text)):
        char = text[position]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == in_string:
                in_string = False
        elif char in "\"'":
            in_string = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:position + 1]
    # Cut off by the token limit: close the open string and braces.
    tail = text[start:].rstrip().rstrip(",")
    return tail + (in_string or "") + "}" * depth


def repair_json(text: str, labels: Sequence[str] = LABELS) -> str:
    """Mechanical fixes for an almost-valid triage answer; returns the repaired text.

    Keeps the first ``{...}`` (dropping code fences and chatter around it, closing it if generation
    stopped early), turns single quotes into double quotes, removes trailing commas and writes
    label and priority values in canonical spelling (``"Password Reset"`` -> ``"password_reset"``).
    It never guesses content: a missing key stays missing.
    """
    candidate = _first_object(text)
    if candidate is None:
        return text
    if "'" in candidate and '"' not in candidate:
        candidate = candidate.replace("'", '"')
    candidate = re.sub(r",\s*}", "}", candidate)
    try:
        record = json.loads(candidate)
    except json.JSONDecodeError:
        return candidate
    if not isinstance(record, dict):
        return candidate
    by_name = {_normalise(label): label for label in labels}
    for key, value in list(record.items()):
        if isinstance(value, str) and key.strip().lower() in ("label", "priority"):
            cleaned = _normalise(value)
            record[key] = by_name.get(cleaned, cleaned) if key.strip().lower() == "label" else cleaned
    record = {key.strip().lower(): value for key, value in record.items()}
    return json.dumps(record)


def json_bare_prompt(ticket_text: str) -> str:
    """The bare structured-output request: asks for JSON with two fields and nothing else."""
    return f"Return a JSON object with the label and the priority of this support ticket.\n\nTicket: {ticket_text}"


def json_messages(ticket_text: str, examples: Sequence, labels: Sequence[str] = LABELS,
                  priorities: Sequence[str] = PRIORITIES, descriptions: bool = False) -> list[dict]:
    """A chat that asks for the triage JSON: instructions with the exact format, the label list, and
    the ``examples`` answered in that format (their priority follows :data:`PRIORITY_BY_LABEL`)."""
    system = (f"You sort support tickets for {COMPANY}.\n"
              f"Allowed labels:\n{label_list_text(labels, descriptions)}\n"
              f"Priority is one of: {', '.join(priorities)}.\n"
              f"Reply with one JSON object and nothing else, exactly in this format:\n{triage_schema_text()}")
    messages = [{"role": "system", "content": system}]
    for example in examples:
        messages.append({"role": "user", "content": f"Ticket: {example.text}"})
        messages.append({"role": "assistant",
                         "content": json.dumps({"label": example.label,
                                                "priority": PRIORITY_BY_LABEL.get(example.label, "medium")})})
    messages.append({"role": "user", "content": f"Ticket: {ticket_text}"})
    return messages


#: Start of the answer written into the prompt for the model ("prefilling"): the model only has to
#: continue a JSON object that is already open.
JSON_PREFILL = '{"label": "'


def retry_messages(messages: Sequence[dict] | str, bad_answer: str, error: str) -> list[dict]:
    """The conversation extended by the invalid answer and a request to fix ``error``."""
    history = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    return history + [
        {"role": "assistant", "content": bad_answer},
        {"role": "user", "content": f"That answer is not valid: {error}. Reply again with only the JSON object "
                                    f"in this format: {triage_schema_text()}"},
    ]


def json_validity(answers: Sequence[str], labels: Sequence[str] = LABELS) -> dict:
    """Rates over ``answers``: ``json_object`` (the answer alone parses as a JSON object), ``valid``
    (passes :func:`validate_triage_json`) and ``valid_after_repair`` (passes it after
    :func:`repair_json`), plus ``count``."""
    if not answers:
        raise ValueError("Pass at least one answer.")

    def is_object(text: str) -> bool:
        try:
            return isinstance(json.loads(text.strip()), dict)
        except json.JSONDecodeError:
            return False

    count = len(answers)
    return {
        "count": count,
        "json_object": sum(is_object(answer) for answer in answers) / count,
        "valid": sum(validate_triage_json(answer, labels).valid for answer in answers) / count,
        "valid_after_repair": sum(validate_triage_json(repair_json(answer, labels), labels).valid
                                  for answer in answers) / count,
    }


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
    answers, seconds = generate(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size, desc=name,
                                progress=progress)
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
        answers, _ = generate(model, tokenizer, [render(ticket)], max_new_tokens, batch_size=1, progress=False)
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


def variants_table(results: Sequence[VariantResult], sample_size: int | None = None) -> str:
    """A Markdown table: accuracy, prompt tokens, batched seconds per ticket and batch-1 latency."""
    lines = ["| variant | method | accuracy | prompt tokens | s/ticket (batched) | latency, batch 1 (s) |",
             "|---|---|---|---|---|---|"]
    for result in results:
        latency = f"{result.latency_s:.2f}" if result.latency_s is not None else "—"
        lines.append(f"| {result.name} | {result.method} | {result.accuracy:.1%} | {result.prompt_tokens:.0f} | "
                     f"{result.seconds_per_ticket:.2f} | {latency} |")
    if sample_size is not None:
        lines.append(f"\n{sample_size} test tickets: one ticket is {1 / sample_size:.1%} of accuracy.")
    return "\n".join(lines)


_METHOD_COLORS = {"generate": "#4C72B0", "score": "#55A868"}


def plot_variants(results: Sequence[VariantResult], goal: float | None = None, goal_label: str | None = None,
                  path=None):
    """Three aligned bar panels per variant: accuracy (with an optional goal line), prompt tokens and
    batch-1 latency, so the price of every accuracy point is visible."""
    from .plots import _pyplot

    plt = _pyplot()
    names = [result.name for result in results]
    figure, axes = plt.subplots(1, 3, figsize=(11, 0.42 * len(results) + 1.6), sharey=True)
    panels = [("accuracy", [r.accuracy for r in results], "{:.0%}"),
              ("prompt tokens per ticket", [r.prompt_tokens for r in results], "{:.0f}"),
              ("latency per ticket, batch 1 (s)", [r.latency_s or 0.0 for r in results], "{:.2f}")]
    for axis, (title, values, fmt) in zip(axes, panels):
        colors = [_METHOD_COLORS.get(result.method, "#999999") for result in results]
        bars = axis.barh(names, values, color=colors)
        axis.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
        axis.set_title(title, fontsize=10)
        axis.margins(x=0.25)
    if goal is not None:
        axes[0].axvline(goal, color="#C44E52", linestyle="--", label=goal_label)
        axes[0].legend(fontsize=8, loc="lower right")
    axes[0].invert_yaxis()
    figure.suptitle("Prompt variants: accuracy and its cost (blue: generate, green: label scoring, "
                    "grey: no LLM)", fontsize=11)
    figure.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    return figure


# --- rescuing invalid JSON -------------------------------------------------------------------

def repair_and_retry(model, tokenizer, answers: Sequence[str], conversations: Sequence, prefill: str = "",
                     max_new_tokens: int = 32, batch_size: int = 16, progress: bool = True) -> tuple[list[str], int]:
    """Repair every answer; re-ask once, quoting the validator's error, for those still invalid; repair again.

    ``conversations[i]`` is the prompt (string or chat messages) that produced ``answers[i]``;
    ``prefill`` is written at the start of the retried answer, as in the first attempt. Returns the
    final answers and how many needed a retry.
    """
    if len(answers) != len(conversations):
        raise ValueError(f"{len(answers)} answers but {len(conversations)} conversations.")
    final = [repair_json(answer) for answer in answers]
    failed = [i for i, answer in enumerate(final) if not validate_triage_json(answer).valid]
    prompts = [render_chat(tokenizer, retry_messages(conversations[i], answers[i],
                                                     validate_triage_json(final[i]).error)) + prefill
               for i in failed]
    if prompts:
        retried, _ = generate(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size, desc="retry",
                              progress=progress)
        for i, text in zip(failed, retried):
            final[i] = repair_json(prefill + text)
    return final, len(failed)


def json_outcome(answers: Sequence[str], final_answers: Sequence[str], tickets: Sequence, prompt_tokens: float,
                 retried: int) -> dict:
    """Everything the JSON comparison reports for one prompt: the rates of :func:`json_validity` for the
    first answers, the valid rate after repair and retry, how many were retried, the label accuracy
    of the final answers (an invalid answer counts as wrong) and the mean prompt tokens."""
    from .metrics import accuracy

    checks = [validate_triage_json(answer) for answer in final_answers]
    return {
        **json_validity(answers),
        "valid_after_retry": sum(check.valid for check in checks) / len(checks),
        "retried": retried,
        "label_accuracy": accuracy([c.record["label"] if c.valid else "invalid" for c in checks],
                                   [ticket.label for ticket in tickets]),
        "prompt_tokens": prompt_tokens,
    }


def json_table(outcomes: dict[str, dict]) -> str:
    """A Markdown table of :func:`json_outcome` results, one row per prompt."""
    lines = ["| JSON prompt | prompt tokens | parses as an object | valid (schema) | after repair | "
             "after repair + 1 retry | retried | label accuracy (final) |", "|---|---|---|---|---|---|---|---|"]
    for name, row in outcomes.items():
        lines.append(f"| {name} | {row['prompt_tokens']:.0f} | {row['json_object']:.0%} | {row['valid']:.0%} | "
                     f"{row['valid_after_repair']:.0%} | {row['valid_after_retry']:.0%} | {row['retried']} | "
                     f"{row['label_accuracy']:.0%} |")
    return "\n".join(lines)
