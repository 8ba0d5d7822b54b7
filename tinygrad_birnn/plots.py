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


# ---------------------------------------------------------------------------------------------------
# Chapter 7 (bidirectional RNNs): the unrolled networks, and smoothed training curves
# ---------------------------------------------------------------------------------------------------

FORWARD_COLOR, BACKWARD_COLOR = "#1f5fa8", "#c0561a"  # forward chain blue, backward chain orange
_FILL = {"x": "#ececec", "h": "#d4e4f7", "hp": "#fbe0cc", "y": "#dcefd6", "boundary": "white"}
_BOX_W, _BOX_H = 0.72, 0.5


def _box(ax: Any, x: float, y: float, text: str, fill: str, dashed: bool = False) -> None:
    from matplotlib.patches import FancyBboxPatch  # noqa: PLC0415

    ax.add_patch(FancyBboxPatch((x - _BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H,
                                boxstyle="round,pad=0.04", facecolor=fill, edgecolor="black",
                                linewidth=1.0, zorder=2, linestyle="--" if dashed else "-"))
    ax.text(x, y, text, ha="center", va="center", fontsize=12, zorder=3)


def _path_arrow(ax: Any, points: list, color: str) -> None:
    """A polyline through `points` with an arrow head at the last one."""
    xs, ys = zip(*points)
    ax.plot(xs[:-1], ys[:-1], color=color, lw=1.4, zorder=1)
    ax.annotate("", xy=points[-1], xytext=points[-2], zorder=1,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.4, shrinkA=0, shrinkB=0))


def unrolled(ax: Any, T: int = 4, bidirectional: bool = False) -> None:
    """An RNN unrolled over T steps: inputs at the bottom, outputs on top, one or two state rows."""
    dx, top, bottom = 2.0, _BOX_H / 2 + 0.04, -(_BOX_H / 2 + 0.04)
    y_x, y_h, y_hp = 0.0, 1.4, 2.8
    y_out = 4.2 if bidirectional else 2.8
    side = _BOX_W / 2 + 0.2  # arrows that must pass a box run this far beside its centre
    fwd, bwd = FORWARD_COLOR, BACKWARD_COLOR
    for t in range(1, T + 1):
        X = dx * t
        _box(ax, X, y_x, f"$x_{t}$", _FILL["x"])
        _box(ax, X, y_h, f"$h_{t}$", _FILL["h"])
        _box(ax, X, y_out, rf"$\hat y_{t}$", _FILL["y"])
        _path_arrow(ax, [(X - 0.12, y_x + top), (X - 0.12, y_h + bottom)], fwd)
        if not bidirectional:
            _path_arrow(ax, [(X, y_h + top), (X, y_out + bottom)], fwd)
            continue
        _box(ax, X, y_hp, f"$h'_{t}$", _FILL["hp"])
        _path_arrow(ax, [(X + 0.12, y_x + top), (X + 0.12, y_x + top + 0.15),
                         (X + side, y_x + top + 0.4), (X + side, y_hp + bottom - 0.4),
                         (X + 0.12, y_hp + bottom)], bwd)
        _path_arrow(ax, [(X - 0.12, y_h + top), (X - side, y_h + top + 0.4),
                         (X - side, y_out + bottom - 0.4), (X - 0.12, y_out + bottom)], fwd)
        _path_arrow(ax, [(X + 0.12, y_hp + top), (X + 0.12, y_out + bottom)], bwd)
    _box(ax, 0.0, y_h, "$h_0$", _FILL["boundary"], dashed=True)
    for t in range(T):
        _path_arrow(ax, [(dx * t + _BOX_W / 2 + 0.04, y_h),
                         (dx * (t + 1) - _BOX_W / 2 - 0.04, y_h)], fwd)
    if bidirectional:
        _box(ax, dx * (T + 1), y_hp, f"$h'_{T + 1}$", _FILL["boundary"], dashed=True)
        for t in range(T + 1, 1, -1):
            _path_arrow(ax, [(dx * t - _BOX_W / 2 - 0.04, y_hp),
                             (dx * (t - 1) + _BOX_W / 2 + 0.04, y_hp)], bwd)
    ax.set_xlim(-0.6, dx * (T + 1) + 0.6)
    ax.set_ylim(-0.5, y_out + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")


def moving_mean(values: Any, window: int) -> tuple:
    """(steps, means): the mean of each `window` consecutive values, at the step that ends it."""
    import numpy as np  # noqa: PLC0415

    values = np.asarray(values, dtype=float)
    means = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(window, len(values) + 1), means


# ---------------------------------------------------------------------------------------------------
# Chapter 12 (going fast): the two floors of a training step, with measurements against them
# ---------------------------------------------------------------------------------------------------

def floors(ax: Any, names: list, roofline: dict, launch: tuple, measured: dict | None = None) -> None:
    """Floors per size on a log axis: `roofline` {label: [ms per size]}, `launch` the (low, high)
    band [ms per size] of the launch floor, `measured` {label: {size: ms}} as markers."""
    import numpy as np  # noqa: PLC0415

    x = np.arange(len(names))
    for (label, values), style in zip(roofline.items(), ("o-", "o--")):
        ax.plot(x, values, style, color=FORWARD_COLOR, alpha=1.0 if style == "o-" else 0.6,
                label=label)
    low, high = launch
    ax.fill_between(x, low, high, color=BACKWARD_COLOR, alpha=0.25,
                    label="launch floor, 2–5 µs per step")
    ax.plot(x, low, color=BACKWARD_COLOR, lw=1)
    ax.plot(x, high, color=BACKWARD_COLOR, lw=1)
    for (label, values), marker in zip((measured or {}).items(), "s^vD"):
        ax.plot([names.index(s) for s in values], list(values.values()), marker, ls=":", ms=7,
                label=label)
    ax.set_yscale("log")
    ax.set_xticks(x, names)
    ax.set_ylabel("ms per training step")
    ax.legend(fontsize=8, loc="upper left")
