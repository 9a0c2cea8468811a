"""Record measured results and build the scorecard.

Each notebook calls :func:`set_notebook` once (``helpers.setup_notebook`` does it),
which replaces the notebook's results file with an empty one for a new run, then
:func:`record` for every number it measures. A file ``results/<notebook-stem>.json``
holds one run: ``run_id``, ``profile``, ``machine`` and ``results`` as ``{key: {"value",
"unit", "anchor", "n", "interval", "interval_kind", "split", "run_id", "profile"}}``.
:func:`scorecard` judges the goals of ``data/anchors.json`` against them (:func:`judge`:
met, not met, undecided or not measured) and writes ``results/SCORECARD.md``.
"""

from __future__ import annotations

import json
import math
import operator
import os
import platform
import uuid
from datetime import datetime, timezone
from pathlib import Path

from . import config

_current_notebook: str | None = None
_current_run: str | None = None

STATUSES = ("met", "not met", "undecided", "not measured")
_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


class ResultsError(RuntimeError):
    """Recording is not possible as asked; the message says what to do."""


def new_run_id() -> str:
    """A run id: ``$WORKBOOK_RUN_ID`` when ``make run`` set one, else a fresh timestamped id."""
    return os.environ.get("WORKBOOK_RUN_ID") or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def set_notebook(stem: str, fresh: bool = True) -> str:
    """Name the notebook whose results the following :func:`record` calls write, and start its run.

    With ``fresh`` (the default) the notebook's results file is replaced by an empty one
    that carries a new ``run_id``, the profile and the machine, so values from two runs
    never mix. Returns the run id.
    """
    global _current_notebook, _current_run
    if not stem or "/" in stem or stem.endswith(".ipynb"):
        raise ResultsError("Pass the notebook's file stem, e.g. set_notebook('00_setup_and_baseline').")
    _current_notebook = stem
    _current_run = new_run_id()
    if fresh:
        _write(results_path(stem), _empty_run(stem))
    return _current_run


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
    """Turn numpy / torch scalars into JSON-friendly Python numbers (NaN and infinity as strings)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _empty_run(stem: str) -> dict:
    global _current_run
    if _current_run is None:
        _current_run = new_run_id()
    return {"notebook": stem, "run_id": _current_run, "profile": config.profile().name,
            "machine": _machine_line(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "results": {}}


def _machine_line() -> str:
    try:
        return machine_summary()
    except Exception:  # a results file must still be written when a library is missing
        return platform.platform()


def _write(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _check_interval(key: str, interval) -> list | None:
    if interval is None:
        return None
    try:
        low, high = (float(_plain(bound)) for bound in interval)
    except (TypeError, ValueError):
        raise ResultsError(f"Result {key!r}: interval must be two numbers (low, high), got {interval!r}.") from None
    if math.isfinite(low) and math.isfinite(high) and low > high:
        raise ResultsError(f"Result {key!r}: interval ({low}, {high}) has low > high.")
    return [_plain(low), _plain(high)]


def record(key: str, value, unit: str | None = None, anchor: str | None = None, n: int | None = None,
           interval=None, interval_kind: str | None = None, split: str | None = None) -> dict:
    """Store one measured value for the current notebook's run and return the stored entry.

    ``value`` may be a number, string or bool, or a dict with ``value``, ``interval``,
    ``n`` (and ``kind``) as returned by :func:`helpers.metrics.proportion`,
    :func:`~helpers.metrics.paired_bootstrap`, :func:`~helpers.metrics.speedup` and friends.
    ``n`` is the sample size behind the value, ``interval`` its 95 % interval (or the
    interquartile range for timings: say which in ``interval_kind``), ``split`` the data
    split it was measured on (``"validation"``, ``"test"``).
    """
    if not isinstance(key, str) or not key.isidentifier():
        raise ResultsError(f"Result key {key!r} must be a simple identifier such as 'decode_tokens_per_s'.")
    if isinstance(value, dict):
        if "value" not in value:
            raise ResultsError(f"Result {key!r}: a dict value needs a 'value' entry (and usually 'interval', 'n').")
        n = value.get("n") if n is None else n
        interval = value.get("interval") if interval is None else interval
        interval_kind = value.get("kind") if interval_kind is None else interval_kind
        value = value["value"]
    value = _plain(value)
    if not isinstance(value, (int, float, str, bool)) and value is not None:
        raise ResultsError(f"Result {key!r} must be a number, string or bool, not {type(value).__name__}.")
    if n is not None and (isinstance(_plain(n), bool) or not isinstance(_plain(n), int) or _plain(n) < 1):
        raise ResultsError(f"Result {key!r}: n must be a positive whole number of samples, got {n!r}.")
    interval = _check_interval(key, interval)
    if anchor is not None:
        known = load_anchors()["anchors"]
        if anchor not in known:
            raise ResultsError(f"Result {key!r} cites unknown anchor {anchor!r}; add it to data/anchors.json.")
    stem = current_notebook()
    path = results_path(stem)
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if _current_run is None or stored.get("run_id") != _current_run:
        stored = _empty_run(stem)  # another run's file (or none): never mix runs
    entry = {"value": value, "unit": unit, "anchor": anchor, "n": _plain(n), "interval": interval,
             "interval_kind": interval_kind, "split": split, "run_id": stored["run_id"],
             "profile": stored["profile"]}
    stored["results"][key] = entry
    _write(path, stored)
    return entry


def load_run(stem: str) -> dict:
    """A notebook's whole results file (``run_id``, ``profile``, ``machine``, ``results``), or {} if none."""
    path = results_path(stem)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def load_results(stem: str | None = None) -> dict:
    """Recorded results of one notebook's latest run as ``{key: entry}`` (empty if none yet)."""
    return load_run(stem or current_notebook()).get("results", {})


def read_value(stem: str, key: str):
    """A value another notebook recorded, checked to come from this session's profile.

    Raises a clear error when that notebook has not been run, did not record ``key``,
    or ran in another profile (its numbers would not be comparable).
    """
    run = load_run(stem)
    entry = run.get("results", {}).get(key)
    if entry is None:
        raise ResultsError(f"{stem} has not recorded {key!r} yet: run notebooks/{stem}.ipynb first.")
    if run.get("profile") != config.profile().name:
        raise ResultsError(f"{key!r} in {stem} comes from the {run.get('profile')!r} profile, this run is "
                           f"{config.profile().name!r}: re-run notebooks/{stem}.ipynb in this profile first.")
    return entry["value"]


# --- goals -----------------------------------------------------------------------------

def _number(value) -> float | None:
    """A recorded value as a float (NaN/inf strings included), or None for non-numbers."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return None


def judge(goal: dict, run: dict) -> dict:
    """Status of one goal against one notebook's run: met, not met, undecided or not measured.

    ``goal`` is an entry of ``data/anchors.json``'s ``goals``: ``key``, ``op`` (>=, >, <=,
    <, ==), ``bound`` and optional ``requires`` (conditions on companion keys that must
    hold for the goal to count, e.g. a false-hit rate only counts when hits happen).
    Met: the whole interval is on the right side of the bound; not met: the whole
    interval on the wrong side; undecided: it straddles the bound. A value recorded
    without an interval is judged as an exact number (counts, bytes). NaN or infinity
    is "not met". Returns ``{"status", "note"}``.
    """
    op = goal.get("op")
    if op not in _COMPARE or not isinstance(goal.get("bound"), (int, float)):
        return {"status": "not measured",
                "note": f"goal for {goal.get('key')!r} needs op in {sorted(_COMPARE)} and a numeric bound"}
    entries = run.get("results", {})
    run_id = run.get("run_id")
    needed = [goal["key"]] + [condition["key"] for condition in goal.get("requires", [])]
    for key in needed:
        entry = entries.get(key)
        if entry is None:
            return {"status": "not measured", "note": f"{key} not recorded in this run"}
        if run_id is None or entry.get("run_id") != run_id or entry.get("profile") != run.get("profile"):
            return {"status": "not measured", "note": f"{key} comes from another run or profile"}
    entry = entries[goal["key"]]
    value = _number(entry["value"])
    if value is None:
        return {"status": "not measured", "note": f"{goal['key']} is not a number ({entry['value']!r})"}
    if not math.isfinite(value):
        return {"status": "not met", "note": f"{goal['key']} is {entry['value']}"}
    for condition in goal.get("requires", []):
        other = _number(entries[condition["key"]]["value"])
        if other is None or not math.isfinite(other) or not _COMPARE[condition["op"]](other, condition["bound"]):
            return {"status": "not met",
                    "note": condition.get("why") or f"needs {condition['key']} {condition['op']} {condition['bound']}"}
    compare, bound = _COMPARE[op], goal["bound"]
    interval = entry.get("interval")
    if interval is None:
        return {"status": "met" if compare(value, bound) else "not met", "note": "exact value, no interval"}
    low, high = (_number(edge) for edge in interval)
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return {"status": "not met", "note": f"{goal['key']} has a non-finite interval"}
    if op == "==":
        status = "met" if low == high == bound else ("not met" if not low <= bound <= high else "undecided")
    elif all(compare(edge, bound) for edge in (low, high)):
        status = "met"
    elif not any(compare(edge, bound) for edge in (low, high)):
        status = "not met"
    else:
        status = "undecided"
    note = ""
    if status == "undecided" and entry.get("n"):
        from .metrics import samples_to_decide

        needed_n = samples_to_decide(value, (low, high), bound, entry["n"])
        if needed_n is None or needed_n > 100 * entry["n"]:
            note = f"the value sits on the bound: no practical sample size (now {entry['n']:,}) would decide it"
        else:
            note = f"about {needed_n:,} samples (now {entry['n']:,}) would decide it"
    return {"status": status, "note": note}


def worst_verdict(verdicts: list[dict]) -> dict:
    """The verdict that counts when a key has several goals: not measured, then not met, undecided, met."""
    severity = ("not measured", "not met", "undecided", "met")
    return min(verdicts, key=lambda verdict: severity.index(verdict["status"]))


def goal_status(key: str, stem: str | None = None) -> str:
    """The status of the goal(s) on ``key`` in this notebook's current run, with its note, for prose.

    For example ``"met"``, ``"undecided (about 96 samples (now 24) would decide it)"`` or
    ``"not met (no paraphrase hit the cache ...)"``. Raises when ``key`` has no goal.
    """
    stem = stem or current_notebook()
    goals = [goal for goal in load_anchors().get("goals", []) if goal["notebook"] == stem and goal["key"] == key]
    if not goals:
        raise ResultsError(f"{stem} has no goal on {key!r}; the goals are in data/anchors.json.")
    run = load_run(stem)
    verdict = worst_verdict([judge(goal, run) for goal in goals])
    return verdict["status"] + (f" ({verdict['note']})" if verdict["note"] and verdict["status"] != "met" else "")


# --- scorecard -------------------------------------------------------------------------

def format_bytes(value: float) -> str:
    """Bytes as a short human string in decimal units (kB, MB, GB, TB)."""
    for name, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {name}"
    return f"{value:.0f} B"


def format_value(value, unit: str | None) -> str:
    """Human-readable value: bytes as MB/GB, ratios and rates with sensible digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if unit == "bytes":
        return format_bytes(value)
    if isinstance(value, int) or float(value).is_integer():
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}" if unit else text


def format_interval(entry: dict) -> str:
    """``[low, high]`` in the value's unit style, with the interval's kind when known; '' without one."""
    interval = entry.get("interval")
    if not interval:
        return ""
    unit = "bytes" if entry.get("unit") == "bytes" else None  # other units are named once, beside the value
    low, high = (format_value(_number(edge) if _number(edge) is not None else edge, unit) for edge in interval)
    kind = entry.get("interval_kind")
    return f"[{low}, {high}]" + (f" ({kind})" if kind else "")


def _goal_text(goal: dict) -> str:
    return goal.get("goal") or f"{goal['op']} {goal['bound']}"


def scorecard_rows(results_dir: Path | None = None, anchors: dict | None = None) -> list[dict]:
    """One row per recorded key and per goal (a goal whose key is missing still gets a row).

    Each row: notebook, key, value, shown value, interval, n, split, profile, run_id, anchor
    figure and source, goal text, status (met / not met / undecided / not measured, or
    '—' for a key without a goal), note and companions (the numbers a goal protects).
    """
    results_dir = Path(results_dir or config.RESULTS_DIR)
    anchors = anchors or load_anchors()
    goals_by_notebook: dict[str, list[dict]] = {}
    for goal in anchors.get("goals", []):
        goals_by_notebook.setdefault(goal["notebook"], []).append(goal)
    runs = {}
    for path in sorted(results_dir.glob("[0-9][0-9]_*.json")):
        try:
            runs[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            runs[path.stem] = {}
    rows = []
    for stem in sorted(set(runs) | set(goals_by_notebook)):
        run = runs.get(stem, {})
        entries = run.get("results", {}) if "run_id" in run else {}
        goals = goals_by_notebook.get(stem, [])
        goal_keys = {goal["key"] for goal in goals}
        for key in list(entries) + [key for key in dict.fromkeys(g["key"] for g in goals) if key not in entries]:
            entry = entries.get(key, {"value": None, "unit": None})
            figure = anchors["anchors"].get(entry.get("anchor") or "", {})
            key_goals = [goal for goal in goals if goal["key"] == key]
            verdicts = [judge(goal, run) for goal in key_goals]
            if not key_goals:
                status, note = "—", ""
            else:
                status = worst_verdict(verdicts)["status"]
                note = "; ".join(v["note"] for v in verdicts if v["note"])
            companions = [companion for goal in key_goals for companion in goal.get("companions", [])]
            rows.append({
                "notebook": stem, "key": key, "value": entry.get("value"), "unit": entry.get("unit"),
                "shown": "—" if key not in entries else format_value(entry["value"], entry.get("unit")),
                "interval": format_interval(entry), "n": entry.get("n"), "split": entry.get("split"),
                "profile": run.get("profile"), "run_id": run.get("run_id"),
                "anchor": figure.get("figure", ""), "source": figure.get("source", ""),
                "goal": "; ".join(_goal_text(goal) for goal in key_goals), "status": status, "note": note,
                "companions": ", ".join(
                    f"{name} = {format_value(entries[name]['value'], entries[name].get('unit'))}"
                    for name in dict.fromkeys(companions) if name in entries),
                "is_goal": key in goal_keys,
            })
    return rows


def machine_summary() -> str:
    """One line naming the machine and library versions a run measured on."""
    from .machine import machine_info

    info = machine_info()
    return (f"{info['cpu']} · {info['cores']} cores · {info['memory_gb']} GB RAM · "
            f"torch {info['torch']} · transformers {info['transformers']} · Python {platform.python_version()}")


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row[name] if name != "key" else f"`{row['key']}`" for _, name in columns]
        lines.append("| " + " | ".join(("" if cell is None else str(cell)).replace("|", "\\|").replace("\n", " ")
                                       for cell in cells) + " |")
    return lines


def status_counts(rows: list[dict]) -> str:
    """'3 met · 1 not met · 2 undecided · 0 not measured' over the goal rows."""
    return " · ".join(f"{sum(row['status'] == status for row in rows)} {status}" for status in STATUSES)


_FULL_COLUMNS = [("notebook", "notebook"), ("key", "key"), ("measured", "shown"), ("interval", "interval"),
                 ("n", "n"), ("split", "split"), ("published figure", "anchor"), ("source", "source"),
                 ("goal", "goal"), ("status", "status"), ("note", "note"), ("beside it", "companions")]


def scorecard(results_dir: Path | None = None, out: Path | None = None) -> Path:
    """Write ``results/SCORECARD.md`` (and ``scorecard.png``) from every results file."""
    results_dir = Path(results_dir or config.RESULTS_DIR)
    rows = scorecard_rows(results_dir)
    out = Path(out or results_dir / "SCORECARD.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    goal_rows = [row for row in rows if row["is_goal"]]
    profiles = sorted({row["profile"] for row in rows if row["profile"]})
    lines = [
        "# Scorecard",
        "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on: {_machine_line()}",
        f"Profile: {', '.join(profiles) or 'none'}" + (" (MIXED: re-run every notebook in one profile)"
                                                        if len(profiles) > 1 else ""),
        f"Goals: {status_counts(goal_rows)}",
        "",
        "Intervals are 95 % (Wilson for rates, paired bootstrap for differences and ratios) unless marked IQR "
        "(timings: interquartile range over repeated rounds). met = the whole interval is on the goal's side; "
        "not met = the whole interval is on the wrong side; undecided = it straddles the bound.",
        "",
        "## Goals",
        "",
        *_table(goal_rows, _FULL_COLUMNS),
        "",
        "## Every recorded value",
        "",
        *_table([row for row in rows if not row["is_goal"]], _FULL_COLUMNS[:8]),
    ]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        from .plots import plot_scorecard

        plot_scorecard(goal_rows, out.with_name("scorecard.png"))
    except ImportError:  # matplotlib missing: the markdown scorecard still stands
        pass
    return out


def summary(stem: str | None = None):
    """This notebook's recorded results beside their anchors and goals, as a Markdown table."""
    stem = stem or current_notebook()
    rows = [row for row in scorecard_rows() if row["notebook"] == stem]
    rows.sort(key=lambda row: not row["is_goal"])
    columns = [("key", "key"), ("measured", "shown"), ("interval", "interval"), ("n", "n"), ("split", "split"),
               ("published figure", "anchor"), ("goal", "goal"), ("status", "status"), ("note", "note")]
    text = "\n".join(_table(rows, columns))
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

    Lists every goal (with its interval, n, status and the numbers it protects) and every
    value that sits beside a published figure; ``results/SCORECARD.md`` has every key.
    Returns False when the README has no markers.
    """
    readme = Path(readme or config.PROJECT_ROOT / "README.md")
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    rows = [row for row in scorecard_rows(results_dir) if row["is_goal"] or row["anchor"]]
    rows.sort(key=lambda row: (row["notebook"], not row["is_goal"]))
    for row in rows:
        row["nb"] = row["notebook"][:2]
    profiles = sorted({row["profile"] for row in rows if row["profile"]})
    lines = [f"Measured on: {_machine_line()} · profile: {', '.join(profiles) or 'none'} · "
             f"{datetime.now(timezone.utc):%Y-%m-%d}", "",
             f"Goals: {status_counts([row for row in rows if row['is_goal']])}.", ""]
    run_time = run_time_line(results_dir)
    if run_time:
        lines += [run_time, ""]
    columns = [("nb", "nb"), ("result", "key"), ("measured", "shown"), ("interval", "interval"), ("n", "n"),
               ("split", "split"), ("published figure", "anchor"), ("goal", "goal"), ("status", "status"),
               ("beside it", "companions")]
    lines += _table(rows, columns)
    before, rest = text.split(README_START, 1)
    _, after = rest.split(README_END, 1)
    readme.write_text(before + README_START + "\n" + "\n".join(lines) + "\n" + README_END + after, encoding="utf-8")
    return True
