"""Small matplotlib helpers shared by the notebooks and the scorecard."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() == "agg" or not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
              reference: float | None = None, reference_label: str | None = None, path: Path | None = None):
    """A labelled bar chart, optionally with a horizontal reference line (an anchor or a goal)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.5))
    bars = axis.bar(labels, values, color="#4C72B0")
    axis.bar_label(bars, fmt="%.3g", fontsize=8)
    if reference is not None:
        axis.axhline(reference, color="#C44E52", linestyle="--", label=reference_label)
        axis.legend(loc="best", fontsize=8)
    axis.set_title(title)
    axis.set_ylabel(ylabel)
    axis.tick_params(axis="x", rotation=20)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str,
               ylabel: str, logy: bool = False, path: Path | None = None):
    """Several named lines ``{name: (x, y)}`` on one axis."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for name, (xs, ys) in series.items():
        axis.plot(xs, ys, marker="o", label=name)
    if logy:
        axis.set_yscale("log")
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def plot_scorecard(rows: list[dict], path: Path):
    """One horizontal bar per notebook: how many of its goals were met, not met or not measured."""
    plt = _pyplot()
    notebooks = sorted({row["notebook"] for row in rows})
    counts = {status: [sum(row["notebook"] == nb and row["status"] == status for row in rows) for nb in notebooks]
              for status in ("met", "not met", "not measured")}
    figure, axis = plt.subplots(figsize=(7, 0.45 * max(len(notebooks), 2) + 1.2))
    left = [0] * len(notebooks)
    colors = {"met": "#55A868", "not met": "#C44E52", "not measured": "#BBBBBB"}
    for status, values in counts.items():
        axis.barh(notebooks, values, left=left, color=colors[status], label=status)
        left = [a + b for a, b in zip(left, values)]
    axis.invert_yaxis()
    axis.set_xlabel("goals")
    axis.set_title("Workbook scorecard: goals met per notebook")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
