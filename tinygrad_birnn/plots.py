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
