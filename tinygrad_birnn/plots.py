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


# --- Chapter 15: attention over a bidirectional encoder ----------------------------------------------------------
def attention_heatmaps(examples: list, ncols: int = 3, height: float = 2.6) -> Any:
    """One heatmap per example: its attention weights, output phonemes (rows) against input letters (columns).

    ``examples`` holds dicts with ``word`` (the letters), ``prediction`` (phonemes separated by spaces) and
    ``weights`` (one row per phoneme, one column per letter); returns the figure.
    """
    import numpy as np  # noqa: PLC0415

    nrows = -(-len(examples) // ncols)
    fig, axes = figure(ncols=ncols, nrows=nrows, height=height, squeeze=False)
    for ax, example in zip(axes.flat, examples):
        weights = np.asarray(example["weights"])
        phonemes = example["prediction"].split()
        ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(example["word"])), list(example["word"]))
        ax.set_yticks(range(len(phonemes)), phonemes)
        ax.tick_params(length=0)
        ax.grid(False)
        ax.set_title(example["word"])
    for ax in list(axes.flat)[len(examples):]:
        ax.axis("off")
    return fig
