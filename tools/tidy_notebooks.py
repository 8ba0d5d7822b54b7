"""Tidy notebooks after `jupyter execute --inplace` (`make refresh` runs this for you).

- drops the per-cell execution timestamps that jupyter execute records, so a refresh changes a
  notebook only where its outputs changed;
- joins consecutive stream outputs and applies their carriage returns and backspaces, as a terminal
  would: a tqdm bar is stored once, finished, instead of once per refresh of the bar. nbval compares
  streams after the same processing, so the stored outputs still match a fresh run.

Usage: python tools/tidy_notebooks.py NOTEBOOK...
"""
import re
import sys

import nbformat

CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)
BACKSPACE = re.compile(r"[^\n]\x08")


def terminal_text(text: str) -> str:
    """What a terminal shows for `text`: backspace erases a character, \\r returns to the line's start."""
    while True:
        shorter = BACKSPACE.sub("", text)
        if shorter == text:
            break
        text = shorter
    return CARRIAGE_RETURN.sub("", text)


def tidy(notebook) -> None:
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            last = outputs[-1] if outputs else None
            if (output.output_type == "stream" and last is not None
                    and last.output_type == "stream" and last.name == output.name):
                last.text += output.text
            else:
                outputs.append(output)
        for output in outputs:
            if output.output_type == "stream":
                output.text = terminal_text(output.text)
        cell.outputs = outputs


if __name__ == "__main__":
    for path in sys.argv[1:]:
        notebook = nbformat.read(path, as_version=4)
        tidy(notebook)
        nbformat.write(notebook, path)
