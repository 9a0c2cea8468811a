"""Guardrails for text that reaches the model: a prompt-injection filter for retrieved sources.

:func:`find_instruction_lines` flags lines that read like instructions to the model;
:func:`strip_instruction_lines` replaces them; :func:`sanitise_hits` cleans a list of
retrieval hits (notebook 02) before they are put into a prompt.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

INSTRUCTION_PATTERNS = (
    r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(instructions?|rules|guidelines|prompts?|"
    r"everything (above|before))\b",
    r"\b(previous|prior|earlier|above)\s+(instructions?|rules|prompts?)\b",
    r"\b(ai|language model|assistant|chatbot|llm)s?\b[^.\n]{0,40}\b(must|should|will|are to|need to)\b",
    r"\b(you are now|from now on|new instructions?|system prompt|developer mode)\b",
    r"\b(ask|tell|instruct|get)\b[^.\n]{0,30}\b(users?|customers?|them|people)\b[^.\n]{0,40}"
    r"\b(e-?mail|send|reply|give|share|provide|type|enter)\b[^.\n]{0,40}\b(passwords?|credentials|"
    r"recovery codes?|2fa codes?|api keys?|card numbers?)\b",
)
_INSTRUCTION_REGEXES = tuple(re.compile(pattern, re.IGNORECASE) for pattern in INSTRUCTION_PATTERNS)


def find_instruction_lines(text: str) -> list[str]:
    """Lines of retrieved ``text`` that read like instructions to the model (prompt injection).

    A heuristic: it looks for phrases that talk to an AI or override earlier
    instructions, and for requests to collect users' secrets. It catches the common,
    blunt attacks; a reworded attack can slip through, so pair it with a system prompt
    that treats sources as data and with least-privilege tools.
    """
    return [line for line in text.splitlines() if any(regex.search(line) for regex in _INSTRUCTION_REGEXES)]


def strip_instruction_lines(text: str,
                            placeholder: str = "[line removed: it contained instructions]") -> tuple[str, list[str]]:
    """``text`` with instruction-like lines replaced by ``placeholder``, and the list of removed lines."""
    flagged = set(find_instruction_lines(text))
    kept = [placeholder if line in flagged else line for line in text.splitlines()]
    return "\n".join(kept), [line for line in text.splitlines() if line in flagged]


def sanitise_hits(hits: Sequence) -> tuple[list, list[str]]:
    """Hits (:class:`helpers.rag.Hit`) with instruction-like lines removed from their text, and every removed line."""
    cleaned, removed = [], []
    for hit in hits:
        text, lines = strip_instruction_lines(hit.text)
        removed.extend(lines)
        cleaned.append(dataclasses.replace(hit, text=text))
    return cleaned, removed
