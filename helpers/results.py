"""Record measured results and build the scorecard.

Each notebook calls :func:`set_notebook` once (``helpers.setup_notebook`` does it),
then :func:`record` for every number it measures. Records land in
``results/<notebook-stem>.json`` as ``{key: {"value", "unit", "anchor", "profile"}}``.
:func:`scorecard` joins all of them with the published figures and goals in
``data/anchors.json`` and writes ``results/SCORECARD.md``.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from . import config

_current_notebook: str | None = None


class ResultsError(RuntimeError):
    """Recording is not possible as asked; the message says what to do."""


def set_notebook(stem: str) -> None:
    """Name the notebook whose results the following :func:`record` calls write."""
    global _current_notebook
    if not stem or "/" in stem or stem.endswith(".ipynb"):
        raise ResultsError("Pass the notebook's file stem, e.g. set_notebook('00_setup_and_baseline').")
    _current_notebook = stem


def current_notebook() -> str:
    """The stem set by :func:`set_notebook`, or ``$WORKBOOK_NOTEBOOK``."""
    stem = _current_notebook or os.environ.get("WORKBOOK_NOTEBOOK")
    if not stem:
        raise ResultsError(
            "No notebook is set. Call helpers.setup_notebook('<notebook stem>') "
            "(or helpers.results.set_notebook) before recording results."
        )
    return stem


def results_path(stem: str | None = None) -> Path:
    """The JSON file that holds the results of notebook ``stem``."""
    return config.RESULTS_DIR / f"{stem or current_notebook()}.json"


def load_anchors(path: Path | None = None) -> dict:
    """The published figures and the workbook's goals (``data/anchors.json``)."""
    path = path or config.DATA_DIR / "anchors.json"
    return json.loads(Path(path).read_text(encoding="utf-8"))


def anchor(anchor_id: str) -> dict:
    """One published figure by id, with its source and conditions."""
    anchors = load_anchors()["anchors"]
    if anchor_id not in anchors:
        raise ResultsError(f"Unknown anchor {anchor_id!r}; known: {', '.join(sorted(anchors))}.")
    return anchors[anchor_id]


def _plain(value):
    """Turn numpy / torch scalars into JSON-friendly Python numbers."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def record(key: str, value, unit: str | None = None, anchor: str | None = None) -> dict:
    """Store one measured value for the current notebook and return the stored entry."""
    if not isinstance(key, str) or not key.isidentifier():
        raise ResultsError(f"Result key {key!r} must be a simple identifier such as 'decode_tokens_per_s'.")
    value = _plain(value)
    if not isinstance(value, (int, float, str, bool)) and value is not None:
        raise ResultsError(f"Result {key!r} must be a number, string or bool, not {type(value).__name__}.")
    if anchor is not None:
        known = load_anchors()["anchors"]
        if anchor not in known:
            raise ResultsError(f"Result {key!r} cites unknown anchor {anchor!r}; add it to data/anchors.json.")
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    entry = {"value": value, "unit": unit, "anchor": anchor, "profile": config.profile().name}
    stored[key] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return entry


def load_results(stem: str | None = None) -> dict:
    """Recorded results of one notebook as ``{key: entry}`` (empty if none yet)."""
    path = results_path(stem)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


# --- goals -----------------------------------------------------------------------------

_OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.USub: operator.neg,
}


def evaluate_goal(expression: str, values: dict) -> bool | None:
    """Evaluate a goal such as ``"bytes_nf4 <= 0.35 * bytes_fp32"`` over recorded values.

    Only arithmetic, comparisons, ``and`` and names of recorded keys are allowed.
    Returns ``None`` when a key the goal needs has not been recorded.
    """

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in values or not isinstance(values[node.id], (int, float)):
                raise KeyError(node.id)
            return values[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.operand))
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            return all(walk(value) for value in node.values)
        if isinstance(node, ast.Compare):
            left = walk(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = walk(right_node)
                if type(op) not in _OPERATORS or not _OPERATORS[type(op)](left, right):
                    return False
                left = right
            return True
        raise ResultsError(f"Goal {expression!r} uses an unsupported expression ({type(node).__name__}).")

    try:
        return bool(walk(ast.parse(expression, mode="eval")))
    except KeyError:
        return None


# --- scorecard -------------------------------------------------------------------------

def format_value(value, unit: str | None) -> str:
    """Human-readable value: bytes as MB/GB, ratios and rates with sensible digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if unit == "bytes":
        for size, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(value) >= size:
                return f"{value / size:.3g} {name}"
        return f"{value:.0f} B"
    if isinstance(value, int) or float(value).is_integer():
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}" if unit else text


def scorecard_rows(results_dir: Path | None = None, anchors: dict | None = None) -> list[dict]:
    """One row per recorded key: notebook, key, value, anchor figure/source, goal, status."""
    results_dir = Path(results_dir or config.RESULTS_DIR)
    anchors = anchors or load_anchors()
    goals_by_key: dict[tuple[str, str], list[dict]] = {}
    for goal in anchors.get("goals", []):
        goals_by_key.setdefault((goal["notebook"], goal["key"]), []).append(goal)
    rows = []
    for path in sorted(results_dir.glob("[0-9][0-9]_*.json")):
        stem = path.stem
        recorded = json.loads(path.read_text(encoding="utf-8"))
        values = {key: entry["value"] for key, entry in recorded.items()}
        for key, entry in recorded.items():
            figure = anchors["anchors"].get(entry.get("anchor") or "", {})
            goals = goals_by_key.get((stem, key), [])
            statuses = [evaluate_goal(goal["check"], values) for goal in goals]
            if not goals:
                status = "—"
            elif any(s is None for s in statuses):
                status = "not measured"
            else:
                status = "met" if all(statuses) else "not met"
            rows.append({
                "notebook": stem, "key": key, "value": entry["value"], "unit": entry.get("unit"),
                "shown": format_value(entry["value"], entry.get("unit")),
                "profile": entry.get("profile"),
                "anchor": figure.get("figure", ""), "source": figure.get("source", ""),
                "goal": "; ".join(goal["goal"] for goal in goals), "status": status,
            })
    return rows


def machine_summary() -> str:
    """One line naming the machine and library versions a run measured on."""
    from .machine import machine_info

    info = machine_info()
    return (f"{info['cpu']} · {info['cores']} cores · {info['memory_gb']} GB RAM · "
            f"torch {info['torch']} · transformers {info['transformers']} · Python {platform.python_version()}")


def scorecard(results_dir: Path | None = None, out: Path | None = None) -> Path:
    """Write ``results/SCORECARD.md`` (and ``scorecard.png``) from every results file."""
    results_dir = Path(results_dir or config.RESULTS_DIR)
    rows = scorecard_rows(results_dir)
    out = Path(out or results_dir / "SCORECARD.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    met = sum(row["status"] == "met" for row in rows)
    judged = sum(row["status"] in ("met", "not met") for row in rows)
    profiles = sorted({row["profile"] for row in rows if row["profile"]})
    lines = [
        "# Scorecard",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on: {machine_summary()}",
        f"Profile: {', '.join(profiles) or 'none'} · goals met: {met} of {judged}",
        "",
        "| notebook | key | measured | published figure | source | goal | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["notebook"], f"`{row['key']}`", row["shown"], row["anchor"], row["source"],
                 row["goal"], row["status"]]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        from .plots import plot_scorecard

        plot_scorecard(rows, out.with_name("scorecard.png"))
    except ImportError:  # matplotlib missing: the markdown scorecard still stands
        pass
    return out


def summary(stem: str | None = None):
    """This notebook's recorded results beside their anchors and goals, as a Markdown table."""
    stem = stem or current_notebook()
    rows = [row for row in scorecard_rows() if row["notebook"] == stem]
    lines = ["| key | measured | published figure | goal | status |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row['key']}` | {row['shown']} | {row['anchor']} | {row['goal']} | {row['status']} |")
    text = "\n".join(lines)
    try:
        from IPython.display import Markdown

        return Markdown(text)
    except ImportError:
        return text


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


RUN_TIMES_FILE = "run_times.json"


def _run_times_path(results_dir: Path | None) -> Path:
    return Path(results_dir or config.RESULTS_DIR) / RUN_TIMES_FILE


def save_run_times(minutes: dict[str, float], results_dir: Path | None = None) -> Path:
    """Store each executed notebook's wall time (minutes), keeping the other notebooks' last times.

    A partial run (``make run NOTEBOOKS=05``) updates only its notebooks, so the file always
    holds the latest time of every notebook, and their sum is the time of a whole run.
    """
    path = _run_times_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    profile_name = config.profile().name
    for stem, value in minutes.items():
        stored[stem] = {"minutes": round(value, 2), "profile": profile_name}
    path.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def run_time_line(results_dir: Path | None = None, profile_name: str = "quick") -> str:
    """One sentence with the notebooks' latest wall times in ``profile_name``, or '' when none are stored."""
    path = _run_times_path(results_dir)
    if not path.exists():
        return ""
    stored = {stem: entry["minutes"] for stem, entry in json.loads(path.read_text(encoding="utf-8")).items()
              if entry.get("profile") == profile_name}
    if not stored:
        return ""
    slowest = max(stored, key=stored.get)
    return (f"Executing the {len(stored)} notebooks took {sum(stored.values()):.1f} min in the {profile_name} profile "
            f"(the sum of each notebook's latest run); the slowest was {slowest} ({stored[slowest]:.1f} min).")


def update_readme(readme: Path | None = None, results_dir: Path | None = None) -> bool:
    """Rewrite the README's results table (between the results markers) from the scorecard.

    Only keys that carry a goal or a published figure are listed, to keep the README short;
    ``results/SCORECARD.md`` has every key. Returns False when the README has no markers.
    """
    readme = Path(readme or config.PROJECT_ROOT / "README.md")
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    rows = [row for row in scorecard_rows(results_dir) if row["goal"] or row["anchor"]]
    profiles = sorted({row["profile"] for row in rows if row["profile"]})
    lines = [f"Measured on: {machine_summary()} · profile: {', '.join(profiles) or 'none'} · "
             f"{datetime.now(timezone.utc):%Y-%m-%d}", ""]
    run_time = run_time_line(results_dir)
    if run_time:
        lines += [run_time, ""]
    lines += ["| notebook | result | measured | published figure | goal | status |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row["notebook"][:2], f"`{row['key']}`", row["shown"], row["anchor"], row["goal"], row["status"]]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    before, rest = text.split(README_START, 1)
    _, after = rest.split(README_END, 1)
    readme.write_text(before + README_START + "\n" + "\n".join(lines) + "\n" + README_END + after, encoding="utf-8")
    return True
