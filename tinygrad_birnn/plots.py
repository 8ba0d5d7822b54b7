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


# --- chapter 13: CTC ---------------------------------------------------------------------------------------------


def ctc_lattice(symbols: Any, occupation: Any, skip: Any, path: Any = None, inputs: Any = None,
                height: float = 3.4) -> tuple:
    """The CTC lattice: one row per extended-target symbol, one column per step, each node shaded by the
    share of the probability mass of the paths that pass through it (alpha * beta / p).

    ``symbols``: the 2S+1 extended-target names (blanks included), top to bottom; ``occupation``: (T, 2S+1);
    ``skip``: (2S+1,) booleans, True where the transition s-2 -> s is allowed; ``path``: optional row index
    per step, drawn in orange; ``inputs``: optional names of the T inputs, written under the columns.
    Transitions are drawn only between nodes that some complete path visits.
    """
    import numpy as np  # noqa: PLC0415

    occupation = np.asarray(occupation)
    steps, rows = occupation.shape
    fig, ax = figure(height=height)
    alive = occupation > 1e-12
    for t in range(steps - 1):
        for s in range(rows):
            for step in (0, 1, 2):
                r = s + step
                if r >= rows or (step == 2 and not skip[r]) or not (alive[t, s] and alive[t + 1, r]):
                    continue
                ax.plot([t, t + 1], [s, r], color="#bbbbbb", lw=1, zorder=1)
    if path is not None:
        ax.plot(range(steps), path, color="#d95f02", lw=2.5, zorder=2, label="one path")
        ax.legend(loc="lower left", frameon=False)
    ts, ss = np.meshgrid(range(steps), range(rows), indexing="ij")
    dots = ax.scatter(ts.ravel(), ss.ravel(), c=occupation.ravel(), cmap="Blues", vmin=0, vmax=1, s=140,
                      edgecolors="#555555", linewidths=0.6, zorder=3)
    fig.colorbar(dots, ax=ax, label="share of the paths", shrink=0.9)
    ax.set_yticks(range(rows), symbols)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xticks(range(steps), [str(t + 1) if inputs is None else f"{t + 1}\n{inputs[t]}" for t in range(steps)])
    ax.set_xlabel("step t (and the letter read)" if inputs is not None else "step t")
    ax.set_ylabel("extended target l'")
    ax.grid(False)
    return fig, ax


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
