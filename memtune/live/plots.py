"""validate.png: model vs real for each figure (bars, model / real), and free memory over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_report(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figs = [k for k, v in report["figures"].items() if not k.startswith("time_")]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 8))
    ratios = [report["figures"][k]["ratio"] or 0.0 for k in figs]
    ax.bar(range(len(figs)), ratios, color=["tab:green" if 0.75 <= r <= 1.25 else "tab:red" for r in ratios])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(figs)), figs, rotation=30, ha="right")
    ax.set_ylabel("model / real (0: real is 0)")
    ax.set_title(report["scaled"]["description"], fontsize=9)
    for name, runs, style in (("model", report["model_runs"], "--"), ("real", report["real_runs"], "-")):
        for i, r in enumerate(runs):
            ax2.plot(r["timeline"]["t"], [f / 2**20 for f in r["timeline"]["free"]], style,
                     label=f"{name} seed {r['seed']}" if i < 3 else None)
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("free memory (MiB)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
