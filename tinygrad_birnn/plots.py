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


# --- Chapter 0 (preface): an unrolled network drawn from its list of edges -----------------------------------

# where each kind of node sits: (row, horizontal offset from its time step); in the bidirectional
# drawing the two chains sit side by side, so that no arrow crosses a box
_PLACE = {False: {"x": (0.0, 0.0), "h": (1.3, 0.0), "y": (2.6, 0.0)},
          True: {"x": (0.0, 0.0), "h": (1.3, -0.38), "hb": (2.3, 0.38), "y": (3.6, 0.0)}}
_LABEL = {"x": "x_{%d}", "h": "h_{%d}", "hb": "h'_{%d}", "y": r"\hat{y}_{%d}"}
_COLOR = {"x": "#fde8d8", "h": "#e8f0fe", "hb": "#e6f4ea", "y": "#f3e8fd"}


def unrolled_network(ax: Any, edges: list, words: list, title: str = "") -> None:
    """Draw an unrolled recurrent network on ``ax`` from its edges.

    ``edges`` are pairs of nodes ``((kind, t), (kind, t))`` pointing from input to output, with kinds
    "x" (input), "h" (forward state), "hb" (backward state) and "y" (prediction) and 0-based steps
    ``t``; ``words`` label the steps underneath.
    """
    bidirectional = any(kind == "hb" for edge in edges for kind, _ in edge)
    place = _PLACE[bidirectional]

    def xy(kind: str, t: int) -> tuple:
        return 1.8 * t + place[kind][1], place[kind][0]

    for kind, t in sorted({node for edge in edges for node in edge}):
        ax.text(*xy(kind, t), f"${_LABEL[kind] % (t + 1)}$", ha="center", va="center", fontsize=11,
                bbox=dict(boxstyle="round,pad=0.3", fc=_COLOR[kind], ec="0.3"))
    for (k1, t1), (k2, t2) in edges:
        ax.annotate("", xy=xy(k2, t2), xytext=xy(k1, t1),
                    arrowprops=dict(arrowstyle="->", color="0.3", shrinkA=12, shrinkB=12))
    for t, word in enumerate(words):
        ax.text(1.8 * t, -0.75, f"“{word}”", ha="center", va="center", fontsize=10, style="italic")
    ax.set_xlim(-0.9, 1.8 * (len(words) - 1) + 0.9)
    ax.set_ylim(-1.1, 4.1 if bidirectional else 3.0)
    ax.set_title(title)
    ax.axis("off")


# --- Chapter 2 (scalar autograd): a computational graph laid out from a dictionary -----------------------------

def graph_layout(graph: dict) -> dict:
    """Positions (x, y) for the nodes of ``graph``, a dict ``name: (label, inputs)`` that lists every
    node after its inputs.

    Column: as far right as the node's uses allow (the output is last). Height: the inputs are spread
    out, every other node sits at the mean height of its inputs, and the boxes of one column are kept
    apart.
    """
    names = list(graph)
    users = {n: [m for m, (_, inputs) in graph.items() if n in inputs] for n in names}
    to_output: dict = {}
    for n in reversed(names):
        to_output[n] = 1 + max((to_output[u] for u in users[n]), default=-1)
    column = {n: max(to_output.values()) - to_output[n] for n in names}
    leaves = [n for n in names if not graph[n][1]]
    y = {n: len(leaves) - 1 - 2.0 * i for i, n in enumerate(leaves)}
    for n in names:
        if graph[n][1]:
            y[n] = sum(y[p] for p in graph[n][1]) / len(graph[n][1])
    for c in set(column.values()):
        members = sorted((n for n in names if column[n] == c), key=lambda n: -y[n])
        for upper, lower in zip(members, members[1:]):
            y[lower] = min(y[lower], y[upper] - 1.2)
    return {n: (2.2 * column[n], y[n]) for n in names}


def computational_graph(ax: Any, graph: dict, notes: dict | None = None) -> dict:
    """Draw ``graph`` (see :func:`graph_layout`) on ``ax``: inputs orange, operations blue, with an
    optional note under each label; returns the positions."""
    pos = graph_layout(graph)
    boxes = {}
    for name, (label, inputs) in graph.items():
        text = label if notes is None else f"{label}\n{notes[name]}"
        boxes[name] = ax.text(*pos[name], text, ha="center", va="center", fontsize=9,
                              bbox=dict(boxstyle="round,pad=0.4", fc="#e8f0fe" if inputs else "#fde8d8",
                                        ec="0.3"))
    for name, (_, inputs) in graph.items():
        for p in inputs:  # an arrow from each input's box to the node's box, clipped at the box edges
            ax.annotate("", xy=pos[name], xytext=pos[p],
                        arrowprops=dict(arrowstyle="->", color="0.35", shrinkA=3, shrinkB=3,
                                        patchA=boxes[p].get_bbox_patch(),
                                        patchB=boxes[name].get_bbox_patch()))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.axis("off")
    return pos

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
