"""The recorded graph and the reverse pass over it.

Each operation on tensors that needs a gradient records a :class:`Node`: the primitive, its input tensors,
the arrays its gradient needs and its parameters. :func:`backward_pass` orders the nodes topologically with
an explicit stack (no recursion, so a chain of a hundred thousand nodes is fine), runs each node's
vector-Jacobian product once, reduces broadcast gradients in one place (:func:`~tinygrad_birnn.ops.unbroadcast`)
and adds the results into the ``.grad`` of the leaves, as PyTorch does. Afterwards the graph is released
(saved arrays and the links to intermediate tensors) unless ``retain_graph=True``.
"""
from __future__ import annotations

from typing import Any

from . import backend
from .ops import Primitive, unbroadcast


class Node:
    """One recorded operation: what ran, on which tensors, and what its gradient needs.

    ``versions`` holds each input tensor's version counter when the operation ran: an in-place change
    of an input afterwards (an optimizer step, ``add_``, ``load_state_dict``) makes ``backward`` through
    this node raise instead of using the changed values, as PyTorch does.
    """

    __slots__ = ("prim", "parents", "inputs", "params", "ans", "res", "multi", "n_out", "freed", "retained",
                 "versions")

    def __init__(self, prim: Primitive, parents: tuple, inputs: tuple, params: dict, ans: Any, res: Any):
        self.prim, self.parents, self.inputs, self.params = prim, parents, inputs, params
        self.ans, self.res = ans, res
        self.multi = isinstance(ans, tuple)
        self.n_out = len(ans) if self.multi else 1
        self.freed = False
        self.retained: dict | None = None
        self.versions = tuple([t._version for t in parents])

    def check_versions(self) -> None:
        for parent, version in zip(self.parents, self.versions):
            if parent._version != version:
                raise RuntimeError(
                    f"one of the tensors needed for the gradient of {self.prim.name!r} (shape {parent.shape}) "
                    f"was modified in place after it was used: its version is {parent._version}, expected "
                    f"{version}; compute the forward pass again after the change (an optimizer step, an "
                    "in-place operation or load_state_dict)")

    def vjp(self, gs: list) -> tuple:
        """The gradients of this node's inputs, given the gradients of its outputs (None counts as zero)."""
        if self.multi:
            g = tuple(backend.xp_of(a).zeros_like(a) if gi is None else gi for gi, a in zip(gs, self.ans))
        else:
            g = gs[0]
        if self.prim.has_residuals:
            return self.prim.vjp(g, self.ans, *self.inputs, res=self.res, **self.params)
        return self.prim.vjp(g, self.ans, *self.inputs, **self.params)

    def release(self) -> None:
        """Drop the saved arrays and the links to the input tensors, so intermediate tensors can be freed;
        a second backward through this node then fails loudly."""
        self.inputs = self.ans = self.res = self.retained = None
        self.parents = ()
        self.freed = True


def topological_order(root: Node) -> list:
    """Nodes reachable from ``root``, each after all the nodes it depends on (iterative
    depth-first search)."""
    order: list = []
    seen: set = set()
    stack: list = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        if node.freed:
            raise RuntimeError(
                "backward() through a graph whose saved arrays were released by an "
                "earlier backward(); "
                "pass retain_graph=True to the first backward() to go through the graph "
                "twice"
            )
        seen.add(id(node))
        stack.append((node, True))
        for parent in node.parents:
            if parent._node is not None and id(parent._node) not in seen:
                stack.append((parent._node, False))
    return order


def backward_pass(root: Any, g: Any, retain_graph: bool) -> None:
    """Add d(root)/d(leaf), contracted with ``g``, into the ``.grad`` of every leaf
    ``root`` depends on."""
    order = topological_order(root._node)
    for node in order:  # before any gradient is added: a stale graph changes nothing
        node.check_versions()
    grads: dict = {id(root._node): [None] * root._node.n_out}
    grads[id(root._node)][root._index] = g
    leaf_grads: dict = {}
    for node in reversed(order):
        gs = grads.pop(id(node), None)
        if gs is None:
            continue
        if node.retained:
            for i, t in node.retained.items():
                if gs[i] is not None:
                    t._accumulate(gs[i])
        for parent, pg, x in zip(node.parents, node.vjp(gs), node.inputs):
            if pg is None or not parent.requires_grad:
                continue
            if pg.shape != x.shape:
                pg = unbroadcast(pg, x.shape)
            if pg.dtype != x.dtype:
                pg = pg.astype(x.dtype)
            if parent._node is None:
                slot = leaf_grads.setdefault(id(parent), [parent, None])
                slot[1] = pg if slot[1] is None else slot[1] + pg
            else:
                slots = grads.setdefault(id(parent._node), [None] * parent._node.n_out)
                i = parent._index
                slots[i] = pg if slots[i] is None else slots[i] + pg
    for leaf, pg in leaf_grads.values():
        leaf._accumulate(pg)
    if not retain_graph:
        for node in order:
            node.release()
