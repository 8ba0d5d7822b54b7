"""A Sphinx extension for the API pages (book/api/): show readers the public names only.

- A class whose base is private (``class LSTM(_GatedBase)``) is shown with the nearest public
  ancestors instead (``Bases: RNNBase``), as PyTorch's reference does; the private base is an
  implementation detail, and its name would point at nothing on the page.
- Private members (``_x``) are never listed, whatever the options of a directive say.

_config.yml loads it (``sphinx.local_extensions``); it needs nothing beyond Sphinx.
"""
from __future__ import annotations


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def public_bases(bases: list[type]) -> list[type]:
    """``bases`` with each private class replaced by its own public bases, recursively, in order."""
    found: list[type] = []
    for base in bases:
        for public in (public_bases(list(base.__bases__)) if is_private(base.__name__) else [base]):
            if public not in found:
                found.append(public)
    return found


def on_process_bases(app, name, obj, options, bases: list) -> None:
    bases[:] = public_bases(list(bases))


def on_skip_member(app, what, name, obj, skip, options):
    if is_private(name):
        return True
    return None  # let autodoc decide


def setup(app):
    app.connect("autodoc-process-bases", on_process_bases)
    app.connect("autodoc-skip-member", on_skip_member)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
