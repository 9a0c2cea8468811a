"""Mapping a model's free-text answer to one of the ticket labels: the workbook's one label parser.

:func:`parse_label` has two rules, chosen explicitly:

- **lenient** (default, notebooks 01 and 10): exact label, else a label name mentioned in the
  answer, else a keyword of a label, else a near-spelling; otherwise ``"unknown"``. It measures
  what the model *meant*.
- **strict** (``strict=True``, notebook 03): the answer must be exactly one label (case,
  surrounding spaces, quotes and punctuation forgiven); anything else is ``"unknown"``. It
  measures whether the model *follows the output format*.

The two differ on answers such as ``"The label is billing."`` (lenient: billing; strict:
unknown), so a score always says which rule produced it.
"""

from __future__ import annotations

import difflib
import re
import string
from typing import Sequence

from .data import LABELS

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

#: Characters the strict rule strips from both ends of an answer (underscores are part of labels).
_STRIP_CHARACTERS = string.whitespace + string.punctuation.replace("_", "") + "“”‘’"


def normalise_label_text(text: str) -> str:
    """Lower case, hyphens and underscores as spaces, runs of white space folded: how labels are compared."""
    return re.sub(r"\s+", " ", text.lower().replace("-", " ").replace("_", " ")).strip()


def parse_label(answer: str, labels: Sequence[str] = LABELS, strict: bool = False, with_rule: bool = False):
    """Map a free-text answer to one of ``labels``, or ``"unknown"`` (:data:`UNKNOWN`).

    ``strict=True``: only an answer that is exactly one label counts (case, surrounding white
    space, quotes and punctuation forgiven; ``"The label is billing."`` is ``unknown``); rule
    ``exact`` or ``none``.

    Lenient rules (the default), first match wins: (1) ``exact`` — the answer is a label (case, quotes, punctuation,
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
    if strict:
        cleaned = answer.strip().strip(_STRIP_CHARACTERS).lower()
        return result(cleaned, "exact") if cleaned in labels else result(UNKNOWN, "none")
    text = normalise_label_text(answer)
    by_name = {normalise_label_text(label): label for label in labels}
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
