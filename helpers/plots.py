"""Small matplotlib helpers shared by the notebooks and the scorecard."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def pyplot():
    """``matplotlib.pyplot``, switched to the non-interactive Agg backend outside a notebook."""
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
    plt = pyplot()
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


def stacked_bar_chart(labels: Sequence[str], parts: dict[str, Sequence[float]], title: str, ylabel: str,
                      reference: float | None = None, reference_label: str | None = None, path: Path | None = None):
    """One bar per label, stacked from ``parts`` (``{part name: one value per label}``), total on top."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.8))
    bottoms = [0.0] * len(labels)
    for name, values in parts.items():
        if len(values) != len(labels):
            raise ValueError(f"Part {name!r} has {len(values)} values for {len(labels)} bars.")
        axis.bar(labels, values, bottom=bottoms, label=name)
        bottoms = [bottom + value for bottom, value in zip(bottoms, values)]
    for position, total in enumerate(bottoms):
        axis.annotate(f"{total:.3g}", (position, total), ha="center", va="bottom", fontsize=8)
    if reference is not None:
        axis.axhline(reference, color="#C44E52", linestyle="--", label=reference_label)
    axis.set_title(title)
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8, loc="upper right")
    axis.tick_params(axis="x", rotation=15)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str,
               ylabel: str, logy: bool = False, path: Path | None = None):
    """Several named lines ``{name: (x, y)}`` on one axis."""
    plt = pyplot()
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
    """One horizontal bar per notebook: how many of its goals were met, not met, undecided or not measured."""
    plt = pyplot()
    notebooks = sorted({row["notebook"] for row in rows})
    counts = {status: [sum(row["notebook"] == nb and row["status"] == status for row in rows) for nb in notebooks]
              for status in ("met", "undecided", "not met", "not measured")}
    figure, axis = plt.subplots(figsize=(7, 0.45 * max(len(notebooks), 2) + 1.2))
    left = [0] * len(notebooks)
    colors = {"met": "#55A868", "undecided": "#DD8452", "not met": "#C44E52", "not measured": "#BBBBBB"}
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


_METHOD_COLORS = {"generate": "#4C72B0", "score": "#55A868"}


def plot_variants(results: Sequence, goal: float | None = None, goal_label: str | None = None,
                  path=None):
    """Three aligned bar panels per :class:`helpers.prompting.VariantResult`: accuracy (with an optional goal line),
    prompt tokens and
    batch-1 latency, so the price of every accuracy point is visible."""
    plt = pyplot()
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


def measured_vs_bound(labels: Sequence[str], measured_ms: Sequence[float], bound_ms: Sequence[float], title: str,
                      path: Path | None = None):
    """Horizontal bars, two per label: the measured time and the time a memory-bandwidth bound allows."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 0.45 * len(labels) + 1.4))
    positions = range(len(labels))
    measured = axis.barh([p - 0.2 for p in positions], measured_ms, height=0.4, color="#4C72B0", label="measured")
    bound = axis.barh([p + 0.2 for p in positions], bound_ms, height=0.4, color="#BBBBBB",
                      label="bound: weight bytes / bandwidth")
    axis.bar_label(measured, fmt="%.1f", fontsize=7, padding=2)
    axis.bar_label(bound, fmt="%.1f", fontsize=7, padding=2)
    axis.set_yticks(list(positions), labels)
    axis.invert_yaxis()
    axis.set_xlabel("ms per decode step")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="lower right")
    axis.margins(x=0.15)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure
