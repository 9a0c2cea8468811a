"""Load the workbook's own data sets about the fictional company Lumen Cloud.

Everything is returned as plain dataclasses (lists of them), so notebooks can
print, filter and slice without any extra library.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .config import DATA_DIR

LABELS: tuple[str, ...] = (
    "billing", "refund", "cancel", "login", "password_reset", "bug_report",
    "feature_request", "data_export", "sharing_permissions", "sync_issue",
    "security_report", "plan_upgrade",
)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Document:
    """One help-center article."""

    id: str
    title: str
    category: str
    text: str


@dataclass(frozen=True)
class QAItem:
    """A question answerable from one KB article; ``keywords`` are its key facts."""

    id: str
    question: str
    answer: str
    doc_id: str
    keywords: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Ticket:
    """A support ticket and its label (one of :data:`LABELS`)."""

    text: str
    label: str


class DataError(ValueError):
    """A data file is missing or malformed; the message says which and how to fix it."""


def _parse_front_matter(path: Path) -> Document:
    raw = path.read_text(encoding="utf-8")
    if not raw.startswith("---"):
        raise DataError(f"{path} has no front matter; start the file with '---', id, title, category, '---'.")
    _, header, body = raw.split("---", 2)
    meta = {}
    for line in header.strip().splitlines():
        key, _, value = line.partition(":")
        meta[key.strip()] = value.strip()
    missing = {"id", "title"} - meta.keys()
    if missing:
        raise DataError(f"{path} front matter lacks {sorted(missing)}.")
    return Document(id=meta["id"], title=meta["title"], category=meta.get("category", ""),
                    text=body.strip())


def load_kb(data_dir: Path | str = DATA_DIR) -> list[Document]:
    """All help-center articles in ``data/kb``, sorted by id."""
    kb_dir = Path(data_dir) / "kb"
    files = sorted(kb_dir.glob("*.md"))
    if not files:
        raise DataError(f"No articles found in {kb_dir}. Is this a complete clone of the workbook?")
    return sorted((_parse_front_matter(path) for path in files), key=lambda doc: doc.id)


def _read_jsonl(path: Path, numbered: bool = False) -> list:
    """The JSON values of a JSON Lines file; with ``numbered``, ``(line number, value)`` pairs."""
    if not path.exists():
        raise DataError(f"Missing data file {path}. Is this a complete clone of the workbook?")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number} is not valid JSON ({error.msg}).") from None
        rows.append((number, value) if numbered else value)
    return rows


def _record(cls, row, where: str):
    """``cls(**row)`` for a dataclass, with a :class:`DataError` naming the unexpected or missing keys and
    ``where`` (file and line) instead of a bare TypeError."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}.")
    names = [f.name for f in fields(cls)]
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    unexpected = sorted(set(row) - set(names))
    missing = [name for name in required if name not in row]
    if unexpected or missing:
        problems = ([f"unexpected key(s) {unexpected}"] if unexpected else []) + \
                   ([f"missing key(s) {missing}"] if missing else [])
        raise DataError(f"{where}: {'; '.join(problems)}; a {cls.__name__} has the keys {names}.")
    return cls(**row)


def load_qa(data_dir: Path | str = DATA_DIR) -> list[QAItem]:
    """The question/answer set; each item points at the KB article that answers it."""
    path = Path(data_dir) / "qa.jsonl"
    return [_record(QAItem, row, f"{path}:{number}") for number, row in _read_jsonl(path, numbered=True)]


def load_tickets(split: str, data_dir: Path | str = DATA_DIR) -> list[Ticket]:
    """Support tickets of one split: ``train``, ``validation`` or ``test``."""
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")
    path = Path(data_dir) / "tickets" / f"{split}.jsonl"
    tickets = [_record(Ticket, row, f"{path}:{number}") for number, row in _read_jsonl(path, numbered=True)]
    unknown = {ticket.label for ticket in tickets} - set(LABELS)
    if unknown:
        raise DataError(f"{split} tickets use unknown labels {sorted(unknown)}.")
    return tickets


CACHE_PAIR_SPLITS = ("calibration", "test", "other_topics")
QA_SPLITS = ("validation", "test")


def load_cache_pairs(split: str | None = None, data_dir: Path | str = DATA_DIR) -> list[dict]:
    """Labelled question pairs (paraphrase vs near miss) for tuning a semantic cache.

    ``split="calibration"`` gives the pairs a threshold is chosen on (and a verifier trained on),
    ``split="test"`` the held-out pairs it is scored on once, ``split="other_topics"`` a second held-out
    set in other wordings and topics (never used for training or choosing); ``None`` gives all of them.
    """
    if split is not None and split not in CACHE_PAIR_SPLITS:
        raise DataError(f"Unknown cache-pair split {split!r}; use one of {', '.join(CACHE_PAIR_SPLITS)} or None.")
    pairs = _read_jsonl(Path(data_dir) / "cache_pairs.jsonl")
    return [pair for pair in pairs if split is None or pair.get("split") == split]


def qa_split(items: list[QAItem], split: str, data_dir: Path | str = DATA_DIR) -> list[QAItem]:
    """The QA items of one split (``validation``: one question per article; ``test``: the rest).

    Choices (chunk size, k, prompt layout) are made on validation and reported once on test;
    the ids live in ``data/qa_splits.json``.
    """
    if split not in QA_SPLITS:
        raise DataError(f"Unknown QA split {split!r}; use one of {', '.join(QA_SPLITS)}.")
    ids = set(json.loads((Path(data_dir) / "qa_splits.json").read_text(encoding="utf-8"))[split])
    return [item for item in items if item.id in ids]


def load_qa_paraphrases(data_dir: Path | str = DATA_DIR) -> dict[str, str]:
    """Another customer's wording of each test question: ``{qa id: paraphrase}`` (same facts, same answer).

    Held out from every training and calibration set; notebook 12 sends them as repeat traffic.
    """
    path = Path(data_dir) / "qa_paraphrases.jsonl"
    paraphrases: dict[str, str] = {}
    for number, row in _read_jsonl(path, numbered=True):
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("paraphrase"), str)):
            raise DataError(f'{path}:{number}: expected {{"id": ..., "paraphrase": ...}} with two strings.')
        if row["id"] in paraphrases:
            raise DataError(f"{path}:{number}: {row['id']} is paraphrased twice; keep one line per QA id.")
        paraphrases[row["id"]] = row["paraphrase"]
    return paraphrases


def stratified_sample(tickets: list[Ticket], n: int, seed: int = 0) -> list[Ticket]:
    """Up to ``n`` tickets with labels as balanced as possible, in a seeded order."""
    import random

    rng = random.Random(seed)
    by_label: dict[str, list[Ticket]] = {}
    for ticket in tickets:
        by_label.setdefault(ticket.label, []).append(ticket)
    for group in by_label.values():
        rng.shuffle(group)
    picked: list[Ticket] = []
    round_index = 0
    while len(picked) < min(n, len(tickets)):
        for label in sorted(by_label):
            group = by_label[label]
            if round_index < len(group) and len(picked) < n:
                picked.append(group[round_index])
        round_index += 1
    rng.shuffle(picked)
    return picked
