"""Structured output for ticket triage: the JSON format, a strict validator, mechanical repair and one retry.

- :func:`json_bare_prompt` / :func:`json_messages` ask for ``{"label": ..., "priority": ...}``;
  :data:`JSON_PREFILL` opens the object for the model;
- :func:`validate_triage_json` checks an answer strictly; :func:`repair_json` fixes what can be
  fixed mechanically; :func:`retry_messages` / :func:`repair_and_retry` re-ask once with the error;
- :func:`json_validity`, :func:`json_outcome` and :func:`json_table` measure and report (notebook 01).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence

from .data import LABELS
from .generation import generate, render_chat
from .labels import normalise_label_text
from .prompting import COMPANY, label_list_text

PRIORITIES: tuple[str, ...] = ("low", "medium", "high")

#: Lumen Cloud's triage rule for the JSON examples: the tickets carry no priority, so the few-shot
#: examples show a priority that follows from the label (accounts at risk first, wishes last).
PRIORITY_BY_LABEL: dict[str, str] = {
    "security_report": "high", "login": "high", "sync_issue": "high",
    "password_reset": "medium", "bug_report": "medium", "billing": "medium", "refund": "medium",
    "data_export": "medium", "sharing_permissions": "medium",
    "cancel": "low", "plan_upgrade": "low", "feature_request": "low",
}


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
    by_name = {normalise_label_text(label): label for label in labels}
    for key, value in list(record.items()):
        if isinstance(value, str) and key.strip().lower() in ("label", "priority"):
            cleaned = normalise_label_text(value)
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
        retried = generate(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size, desc="retry",
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
