"""PNG plots of a run (matplotlib, Agg backend; no torch):

tok_s.png          e2e and decode tok/s by config and model (medians)
step_latency.png   per-step latency against position, one panel per model, a line per config
                   (elementwise median over trials)
ttft.png           TTFT against prompt length, a line per model (the run's main engine)
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from runtime.bench.report import main_engine


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_tok_s(summary: pd.DataFrame, path: Path) -> None:
    plt = _pyplot()
    labels = list(dict.fromkeys(summary["row_label"]))
    models = list(dict.fromkeys(summary["model_label"]))
    width = 0.8 / max(len(models), 1)
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 1.2 * len(labels) + 2), 7), sharex=True)
    for ax, metric, title in ((axes[0], "e2e_tok_s", "E2E tok/s"), (axes[1], "decode_tok_s", "Decode tok/s")):
        for i, model in enumerate(models):
            part = summary[summary["model_label"] == model].set_index("row_label")[metric]
            values = [part.get(label, float("nan")) for label in labels]
            ax.bar([x + i * width for x in range(len(labels))], values, width, label=model)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_xticks([x + width * (len(models) - 1) / 2 for x in range(len(labels))])
    axes[1].set_xticklabels(labels, rotation=30, ha="right")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _median_steps(trials: list[list[float]]) -> list[float]:
    n = min(len(t) for t in trials)
    return [statistics.median(t[i] for t in trials) for i in range(n)]


def plot_step_latency(rows: list[dict], path: Path) -> None:
    """x: the position a step attends up to (prompt_tokens + step), y: that step's ms."""
    plt = _pyplot()
    series: dict[str, dict[str, tuple[int, list[list[float]]]]] = {}
    for r in rows:
        if r.get("status") != "ok" or not r.get("step_ms"):
            continue
        label = (
            f"{r['config']}" + ("" if r["batch_size"] == 1 else f" b{r['batch_size']}") + f" ({r['engine']})"
        )
        model = series.setdefault(r["model_name"], {})
        model.setdefault(label, (r["prompt_tokens"], []))[1].append(r["step_ms"])
    if not series:
        return
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 3.2 * len(series)), squeeze=False)
    for ax, (model, lines) in zip(axes[:, 0], series.items()):
        for label, (prompt, trials) in lines.items():
            steps = _median_steps(trials)
            ax.plot(range(prompt + 1, prompt + 1 + len(steps)), steps, label=label, linewidth=0.8)
        ax.set_title(model)
        ax.set_xlabel("position")
        ax.set_ylabel("step ms")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ttft(summary: pd.DataFrame, rows: list[dict], path: Path) -> None:
    plt = _pyplot()
    engine = main_engine(rows)
    part = summary[(summary["engine"] == engine) & (summary["batch_size"] == 1)]
    if part.empty:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for model, group in part.groupby("model_label", sort=False):
        by_len = group.groupby("prompt_tokens")["ttft_ms"].median().sort_index()
        ax.plot(by_len.index, by_len.values, marker="o", label=model)
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("TTFT ms")
    ax.set_title(f"TTFT against prompt length ({engine}, batch 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(folder: Path, rows: list[dict], summary: pd.DataFrame) -> list[Path]:
    """Every plot that has data; returns the files written."""
    if summary.empty:
        return []
    plot_tok_s(summary, folder / "tok_s.png")
    plot_step_latency(rows, folder / "step_latency.png")
    plot_ttft(summary, rows, folder / "ttft.png")
    return [p for p in (folder / n for n in ("tok_s.png", "step_latency.png", "ttft.png")) if p.exists()]
