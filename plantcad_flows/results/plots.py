"""ROC and precision-recall curves for classification cells, rendered to PNG bytes.

Cells finish on the flow's thread pool, so several curves are drawn at once. pyplot keeps one
global figure registry and current-figure state, which threads trample; each figure here is a
`matplotlib.figure.Figure` with its own Agg canvas instead, owned by the call that draws it.
The caller decides where the bytes go (the cell's directory).
"""

from __future__ import annotations

import io

import numpy as np


def curve_pngs(labels: np.ndarray, scores: np.ndarray, title: str, with_roc: bool = True) -> dict[str, bytes]:
    """PNG bytes of the ROC (if asked) and precision-recall curves of one cell.

    Returns an empty dict when only one class is present (no curve is defined).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(labels)) < 2:
        return {}
    out: dict[str, bytes] = {}
    if with_roc:
        fpr, tpr, _ = roc_curve(labels, scores)
        fig, ax = _figure(title)
        ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(labels, scores):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        ax.set(xlabel="False positive rate", ylabel="True positive rate")
        ax.legend(loc="lower right")
        out["roc.png"] = _png(fig)
    prec, rec, _ = precision_recall_curve(labels, scores)
    fig, ax = _figure(title)
    ax.plot(rec, prec, label=f"AUPRC {average_precision_score(labels, scores):.3f}")
    ax.axhline(labels.mean(), linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="Recall", ylabel="Precision")
    ax.legend(loc="upper right")
    out["pr.png"] = _png(fig)
    return out


def _figure(title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(fig)
    # The title (two lines, 9 pt: a long cell name fits the figure's width) centred on the figure,
    # and fixed margins that fit it and the axis labels: the figure is rendered once, by savefig
    # (tight_layout would first render it to measure: half the cost of a plot).
    fig.suptitle(title, fontsize=9, y=0.985, va="top")
    fig.subplots_adjust(left=0.16, right=0.96, bottom=0.12, top=0.87)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
