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
        fig, ax = _figure()
        ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(labels, scores):.3f}")
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        ax.set(xlabel="False positive rate", ylabel="True positive rate")
        ax.set_title(title, fontsize=9)  # small enough for a long cell name on a 4-inch figure
        ax.legend(loc="lower right")
        out["roc.png"] = _png(fig)
    prec, rec, _ = precision_recall_curve(labels, scores)
    fig, ax = _figure()
    ax.plot(rec, prec, label=f"AUPRC {average_precision_score(labels, scores):.3f}")
    ax.axhline(labels.mean(), linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="Recall", ylabel="Precision")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right")
    out["pr.png"] = _png(fig)
    return out


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()
