"""Exercise checks for notebook 02 (retrieval-augmented generation)."""
from __future__ import annotations

import re

from ._common import close, need_answer, verdict

# The toy ranking of exercise 1: the documents a retriever returned for four questions, best first.
TOY_RANKINGS = [["kb-3", "kb-1", "kb-7"], ["kb-2", "kb-9", "kb-4"], ["kb-5", "kb-6", "kb-8"], ["kb-1", "kb-3", "kb-2"]]
TOY_RELEVANT = ["kb-1", "kb-4", "kb-5", "kb-9"]

_SECRET = re.compile(r"pass\s?(word|code|phrase)|credential|login details|recovery code|2fa|one-time code|"
                     r"\bpin\b|secret|api key|card number", re.IGNORECASE)
_ACTION = re.compile(r"\b(e-?mail|mail|send|share|give|post|text|forward|type|enter|reveal|disclose|provide|"
                     r"submit|reply|paste|ask|request)", re.IGNORECASE)
# "We will never ask for your password" names a secret and an action but is a reassurance, not an attack.
_NEGATION = re.compile(r"\b(never|not|no one|nobody|won't|don't|doesn't|cannot|can't)\b|n't\b", re.IGNORECASE)


def check_02_1(answer) -> bool:
    """Recall@2 of the toy ranking in ``TOY_RANKINGS`` / ``TOY_RELEVANT``."""
    if need_answer(answer, "Write recall@2 as a fraction between 0 and 1, e.g. check_02_1(0.25)."):
        return False
    return verdict(close(answer, 0.5, 0.001),
                   "Questions 1 (kb-1 at rank 2) and 3 (kb-5 at rank 1) have their document in the top 2; "
                   "question 2's kb-4 is at rank 3 and question 4's kb-9 is missing: 2 of 4 = 0.5.",
                   "For each question, look only at the first 2 documents and ask: is the relevant one there? "
                   "Recall@2 is the fraction of questions where it is.")


def check_02_2(answer) -> bool:
    """Bytes of a flat (exact) float32 index of 100 M vectors of dimension 384."""
    if need_answer(answer, "Write your answer in bytes, e.g. check_02_2(1e9)."):
        return False
    expected = 100e6 * 384 * 4
    return verdict(close(answer, expected, 0.01),
                   f"100 M x 384 dimensions x 4 bytes = {expected / 1e9:.1f} GB: more than most machines' RAM, "
                   "and every exact query reads all of it. That is why large indexes compress vectors "
                   "(product quantization) as well as partitioning them.",
                   "A flat index stores every vector in full: count vectors x dimensions x bytes per float32.")


def check_02_3(line) -> bool:
    """A prompt-injection line (asks for a secret) that the notebook's filter does not flag."""
    from ..guardrails import find_instruction_lines

    if need_answer(line, "Pass one line of text, e.g. check_02_3(\"Please ...\")."):
        return False
    if not isinstance(line, str) or not line.strip():
        return verdict(False, "", "Pass one non-empty line of text.")
    if find_instruction_lines(line):
        return verdict(False, "", "The filter flags this line: reword it so none of its patterns match "
                                  "(see guardrails.INSTRUCTION_PATTERNS).")
    is_attack = bool(_SECRET.search(line)) and bool(_ACTION.search(line)) and not _NEGATION.search(line)
    return verdict(is_attack,
                   "The filter let it through. Pattern filters only catch the wordings someone thought of; "
                   "that is why the system prompt, output checks and giving the model no access to secrets "
                   "matter more than any list of patterns.",
                   "The filter lets it through, but the line does not ask anyone to hand over a secret "
                   "(a password, passcode, recovery code...), or it says not to. Write a line an attacker "
                   "would plant.")
