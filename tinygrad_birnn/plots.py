"""The book's figures: one style for every chapter, so a chapter's cell shows its experiment, not its axes.

Call :func:`setup` once at the top of a chapter: figures are then stored as PNG at twice their displayed
resolution (sharp on high-DPI screens) with labels readable at the size the book renders them. The other
functions draw the figures that more than one chapter needs; each returns the Matplotlib figure.

Captions and alt texts are not drawn into the image: the cell that shows a figure carries them in its
metadata (``mystnb.figure.caption``, ``mystnb.figure.name``, ``mystnb.image.alt``), which Jupyter Book
renders as a numbered figure with a caption.
"""
from __future__ import annotations

from typing import Any

WIDTH = 7.0  # inches: the width of the book's text column at 100% zoom, so fonts render at their size
STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.constrained_layout.use": True,
}


def setup() -> None:
    """Apply the book's style and store inline figures as 2x PNG (call once per chapter)."""
    import matplotlib  # noqa: PLC0415 (the library itself needs only NumPy)

    matplotlib.rcParams.update(STYLE)
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats  # noqa: PLC0415

        set_matplotlib_formats("retina")
    except ImportError:  # outside Jupyter: nothing to configure
        pass


def figure(ncols: int = 1, nrows: int = 1, height: float = 3.0, width: float = WIDTH, **kwargs: Any) -> tuple:
    """``plt.subplots`` at the book's width; returns (figure, axes)."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt.subplots(nrows, ncols, figsize=(width, height * nrows), **kwargs)


# --- chapter 14: the CRF --------------------------------------------------------------------------------------
def transition_scores(ax: Any, start: Any, transitions: Any, end: Any, labels: Any, allowed: Any = None,
                      title: str = "") -> Any:
    """A CRF's scores as one heat map: a 'start' row, the transitions (row: from, column: to), an 'end' row.

    ``allowed`` (optional): booleans of the same layout (start, transitions, end); forbidden cells get an x.
    Returns the image, for a colour bar.
    """
    import numpy as np  # noqa: PLC0415

    grid = np.vstack([np.asarray(start)[None, :], np.asarray(transitions), np.asarray(end)[None, :]])
    limit = np.abs(grid).max() or 1.0
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    ax.set_yticks(range(len(labels) + 2), ["start", *labels, "end"])
    ax.axhline(0.5, color="k", lw=0.8)
    ax.axhline(len(labels) + 0.5, color="k", lw=0.8)
    ax.grid(False)
    if allowed is not None:
        ok = np.vstack([np.asarray(allowed[0])[None, :], np.asarray(allowed[1]), np.asarray(allowed[2])[None, :]])
        rows, cols = np.nonzero(~ok)
        ax.scatter(cols, rows, marker="x", color="k", s=30, lw=1.2)
    ax.set_xlabel("to tag")
    ax.set_title(title)
    return image
