"""Write the first code cell of every chapter: the cell that installs the library where it is missing.

A chapter opened on Colab (or in any Python without the library) runs this cell first; it installs
``tinygrad_birnn`` from the repository, with the data it ships and the packages the chapters import
(the ``chapters`` extra), and does nothing where the library is already installed, as in `make test`.
The repository's address is read from one place, ``[project.urls] Repository`` in pyproject.toml, so
that changing it there and running this tool changes every chapter.

The cell carries the tag ``install``. If a notebook's first code cell is already an install cell
(tagged ``install``, or one that looks for the library with ``find_spec``), it is rewritten; otherwise
the cell is inserted before the first code cell, numbered 1, and the execution counts after it move
up by one, as if the notebook had been run again. The cell prints nothing where the library is
installed, so it stores no outputs.

Usage:
    python tools/install_cell.py book/*.ipynb            write the cell into these notebooks
    python tools/install_cell.py --check book/*.ipynb    only report (exit status 1) those that differ
    python tools/install_cell.py --url file:///path/to/clone --output /tmp/x.ipynb book/05_rnn_bptt.ipynb
                                                         install from elsewhere (a local clone), into a copy
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (pytest depends on tomli there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TAG = "install"
PACKAGE = "tinygrad_birnn"
TEMPLATE = '''\
# On Colab, or any machine without the library: install it, with the data it ships
# and the packages the chapters import.
import importlib.util, subprocess, sys
if importlib.util.find_spec("{package}") is None:
    repository = "{url}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"{package}[chapters] @ git+{{repository}}"], check=True)'''


def repository_url(root: Path = ROOT) -> str:
    """The repository's address: ``[project.urls] Repository`` in pyproject.toml."""
    with open(root / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["urls"]["Repository"]


def cell_source(url: str | None = None) -> str:
    """The source of the install cell for the repository at ``url`` (default: pyproject's)."""
    return TEMPLATE.format(package=PACKAGE, url=url or repository_url())


def first_code_cell(notebook) -> tuple[int, object]:
    """(index, cell) of the notebook's first code cell, or (len(cells), None) when it has none."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            return index, cell
    return len(notebook.cells), None


def is_install_cell(cell) -> bool:
    """Whether ``cell`` is a version of the install cell (tagged, or looking for the library)."""
    if cell is None or cell.cell_type != "code":
        return False
    return TAG in cell.metadata.get("tags", []) or f'find_spec("{PACKAGE}")' in cell.source


def has_install_cell(notebook, url: str | None = None) -> bool:
    """Whether the notebook's first code cell is exactly the install cell, tagged and without outputs."""
    _, cell = first_code_cell(notebook)
    return (cell is not None and cell.source == cell_source(url)
            and TAG in cell.metadata.get("tags", []) and not cell.outputs)


def stamp(notebook, url: str | None = None) -> bool:
    """Make the notebook's first code cell the install cell; returns whether anything changed."""
    if has_install_cell(notebook, url):
        return False
    index, cell = first_code_cell(notebook)
    if is_install_cell(cell):
        cell.source = cell_source(url)
        cell.outputs = []
    else:
        for later in notebook.cells[index:]:
            if later.cell_type == "code" and later.execution_count is not None:
                later.execution_count += 1
                for output in later.outputs:
                    if "execution_count" in output and output.execution_count is not None:
                        output.execution_count += 1
        cell = nbformat.v4.new_code_cell(cell_source(url), execution_count=1)
        notebook.cells.insert(index, cell)
    tags = cell.metadata.setdefault("tags", [])
    if TAG not in tags:
        tags.insert(0, TAG)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="report notebooks that differ; write nothing")
    parser.add_argument("--url", help="install from this repository instead of pyproject's")
    parser.add_argument("--output", type=Path, help="write the (single) notebook here instead of in place")
    args = parser.parse_args(argv)
    if args.output and len(args.notebooks) != 1:
        parser.error("--output takes exactly one notebook")
    differ = []
    for path in args.notebooks:
        notebook = nbformat.read(path, as_version=4)
        if args.check:
            if not has_install_cell(notebook, args.url):
                differ.append(path)
                print(f"{path}: the first code cell is not the install cell")
            continue
        changed = stamp(notebook, args.url)
        if changed or args.output:
            nbformat.write(notebook, args.output or path)
        print(f"{path}: {'written' if changed else 'unchanged'}{f' -> {args.output}' if args.output else ''}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
