"""Charts for Dagster asset metadata: PNG images embedded in Markdown (`![..](data:image/png;
base64,..)`), which the Dagster UI renders on the asset's page.

matplotlib (and numpy) load on the first chart, inside a step, with the Agg backend (no display):
the code location itself never imports them (crm_pipeline_tests/test_fast_start.py). Each
function takes plain Python numbers and returns PNG bytes; `markdown` wraps them for metadata.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

WIDTH, HEIGHT, DPI = 8.0, 4.0, 100  # 800 x 400 pixels: readable in the UI's metadata panel


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _figure() -> tuple[Any, Any]:
    return _pyplot().subplots(figsize=(WIDTH, HEIGHT), dpi=DPI)


def markdown(title: str, png: bytes) -> str:
    """A Markdown image with the PNG inline, for `dg.MetadataValue.md`."""
    encoded = base64.b64encode(png).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"


def stacked_over_time(
    title: str, series: Mapping[str, Mapping[date, float]], ylabel: str = "net revenue"
) -> bytes:
    """One stacked bar per period, a colour per series (e.g. revenue by channel per month)."""
    fig, ax = _figure()
    periods = sorted({p for values in series.values() for p in values})
    bottom = [0.0] * len(periods)
    for name in sorted(series, key=lambda n: -sum(series[n].values())):
        heights = [float(series[name].get(p, 0.0)) for p in periods]
        ax.bar(range(len(periods)), heights, bottom=bottom, label=name, width=0.85)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    step = max(1, len(periods) // 12)
    ax.set_xticks(range(0, len(periods), step))
    ax.set_xticklabels([p.strftime("%Y-%m") for p in periods][::step], rotation=45, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(fontsize=8, ncols=2)
    return _png(fig)


def bars(title: str, values: Mapping[str, float], ylabel: str, horizontal: bool = False) -> bytes:
    """One bar per label (segment sizes, LTV per acquisition channel)."""
    fig, ax = _figure()
    labels = list(values)
    heights = [float(values[k]) for k in labels]
    if horizontal:
        ax.barh(labels, heights)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.bar(labels, heights)
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", rotation=30)
    ax.set_title(title)
    return _png(fig)


def grouped_bars(
    title: str, labels: Sequence[str], groups: Mapping[str, Sequence[float]], ylabel: str
) -> bytes:
    """Bars side by side per label, one colour per group (e.g. LTV and predicted LTV)."""
    fig, ax = _figure()
    width = 0.8 / max(len(groups), 1)
    for i, (name, heights) in enumerate(groups.items()):
        ax.bar([x + i * width for x in range(len(labels))], list(heights), width, label=name)
    ax.set_xticks([x + width * (len(groups) - 1) / 2 for x in range(len(labels))])
    ax.set_xticklabels(list(labels), rotation=30, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _png(fig)


def histogram(title: str, values: Sequence[float], xlabel: str, bins: int = 20) -> bytes:
    """Distribution of one score over customers (churn probability, predicted LTV)."""
    fig, ax = _figure()
    ax.hist(list(values), bins=bins)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("customers")
    return _png(fig)


def calibration(
    title: str, frequencies: Sequence[int], actual: Sequence[float], predicted: Sequence[float]
) -> bytes:
    """Mean actual vs model-predicted holdout purchases by calibration-period frequency, as
    lifetimes' `plot_calibration_purchases_vs_holdout_purchases`."""
    fig, ax = _figure()
    ax.plot(list(frequencies), list(actual), marker="o", label="actual")
    ax.plot(list(frequencies), list(predicted), marker="s", linestyle="--", label="model")
    ax.set_title(title)
    ax.set_xlabel("purchases in calibration period (repeat days)")
    ax.set_ylabel("average purchases in holdout period")
    ax.legend()
    return _png(fig)
