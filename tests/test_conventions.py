"""The book's conventions, checked in every chapter, and the project's facts that live in one place.

Chapter conventions (each notebook in book/):
- no code line, printed line or code block longer than 88 characters (the width the book's pages show
  without a scroll bar);
- the first code cell is the install cell that tools/install_cell.py writes, so a chapter opened on
  Colab installs the library;
- every figure is numbered, captioned and has alt text (cell metadata mystnb.figure and mystnb.image);
- the learning goals, the summary and the exercises in the same form in every chapter.

These are being brought to every chapter. Until a convention holds everywhere, its test reports the
offenders as an expected failure (shown as XFAIL with the list, `-rx`), so that `make test` passes; the
entry in ENFORCED switches it to a real failure. TINYGRAD_BIRNN_ENFORCE=all (or a comma-separated list
of the names below) enforces them for one run:

    TINYGRAD_BIRNN_ENFORCE=all python -m pytest tests/test_conventions.py

The project's facts (enforced now): the repository's address and the version are each set in one
place and everything else agrees with them; _toc.yml numbers the book.
"""
from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import install_cell  # noqa: E402

import tinygrad_birnn  # noqa: E402

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
MAX_LINE = 88
# convention -> True: a violation fails the run; False: it is reported as an expected failure.
ENFORCED = {
    "line_length": True,
    "install_cell": True,
    "figures": True,
    "chapter_form": True,
    "api_pages": True,   # every public name of the library is on a page in book/api/
}
_requested = os.environ.get("TINYGRAD_BIRNN_ENFORCE", "")
for _name in ENFORCED if _requested == "all" else filter(None, _requested.split(",")):
    ENFORCED[_name.strip()] = True

# What a reader sees of an output: the first of these that it has (myst-nb's order for HTML).
SHOWN_MIME = ("text/html", "image/svg+xml", "image/png", "image/jpeg", "text/markdown", "text/latex",
              "text/plain")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FENCE = re.compile(r"^(`{3,}|~{3,})(.*?)\n(.*?)^\1\s*$", re.MULTILINE | re.DOTALL)


def report(convention: str, problems: list[str], path: Path) -> None:
    """Fail (enforced) or xfail (not yet) with the problems found; pass when there are none."""
    if not problems:
        return
    message = f"{path.name}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:15])
    if len(problems) > 15:
        message += f"\n  ... and {len(problems) - 15} more"
    if ENFORCED[convention]:
        pytest.fail(message)
    pytest.xfail(f"[{convention}, not enforced yet] {path.name}: {len(problems)} problem(s), "
                 f"first: {problems[0]}")


def read(path: Path):
    return nbformat.read(path, as_version=4)


def shown_text(output) -> str:
    """The text of an output as the book shows it ('' for images, HTML and the like)."""
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind == "error":
        return ANSI.sub("", "\n".join(output.get("traceback", [])))
    data = output.get("data", {})
    shown = next((mime for mime in SHOWN_MIME if mime in data), None)
    return data["text/plain"] if shown == "text/plain" else ""


def long_lines(notebook) -> list[str]:
    """Where a code line, an output line or a line of a fenced block is over MAX_LINE characters."""
    found = []

    def check(text: str, where: str) -> None:
        for number, line in enumerate(text.splitlines(), 1):
            if len(line) > MAX_LINE:
                found.append(f"cell {where} line {number} ({len(line)} chars): {line[:60]!r}...")

    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            check(cell.source, f"{index} (code)")
            for output in cell.get("outputs", []):
                check(shown_text(output), f"{index} (output)")
        elif cell.cell_type == "markdown":
            for match in FENCE.finditer(cell.source):
                if not match.group(2).strip().startswith("{"):  # a directive's body is prose
                    check(match.group(3), f"{index} (code block)")
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_line_over_88_characters(path):
    report("line_length", long_lines(read(path)), path)


def test_the_install_cell_fits_in_88_characters():
    assert max(len(line) for line in install_cell.cell_source().splitlines()) <= MAX_LINE


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_first_code_cell_installs_the_library(path):
    notebook = read(path)
    problems = []
    if not install_cell.has_install_cell(notebook):
        _, cell = install_cell.first_code_cell(notebook)
        first = cell.source.splitlines()[0] if cell is not None and cell.source else ""
        problems.append(f"the first code cell is not the install cell (it starts {first!r}); "
                        "run python tools/install_cell.py " + path.relative_to(ROOT).as_posix())
    report("install_cell", problems, path)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_figure_has_a_caption_a_name_and_alt_text(path):
    problems = []
    for index, cell in enumerate(read(path).cells):
        if cell.cell_type != "code":
            continue
        images = [o for o in cell.get("outputs", [])
                  if any(mime.startswith("image/") for mime in o.get("data", {}))]
        if not images:
            continue
        mystnb = cell.metadata.get("mystnb", {})
        figure, image = mystnb.get("figure", {}), mystnb.get("image", {})
        if not str(figure.get("caption", "")).strip():
            problems.append(f"cell {index}: a figure without mystnb.figure.caption")
        if not str(figure.get("name", "")).startswith("fig-"):
            problems.append(f"cell {index}: mystnb.figure.name missing or not 'fig-...'")
        if not str(image.get("alt", "")).strip():
            problems.append(f"cell {index}: a figure without mystnb.image.alt")
    report("figures", problems, path)


@pytest.mark.parametrize("path", [p for p in CHAPTERS if not p.name.startswith("00_")],
                         ids=lambda p: p.name)
def test_goals_summary_and_exercises_in_the_common_form(path):
    text = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    problems = []
    if "```{admonition} In this chapter you will learn" not in text:
        problems.append("no goals admonition: ```{admonition} In this chapter you will learn")
    if not re.search(r"^#+ Summary\s*$", text, re.MULTILINE):
        problems.append("no 'Summary' section")
    if not re.search(r"^#+ Exercises\s*$", text, re.MULTILINE):
        problems.append("no 'Exercises' section")
    solutions = re.findall(r"```{admonition} Solution\s*\n:class: dropdown", text)
    if not solutions:
        problems.append("no solution in an ```{admonition} Solution / :class: dropdown block")
    report("chapter_form", problems, path)


# --- facts set in one place ---------------------------------------------------------------------------

def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def tracked_text_files() -> list[Path]:
    skip = {".png", ".jpg", ".woff", ".js", ".bib"}
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix not in skip]
    ignored = ("_build", ".venv", ".git", "node_modules", "screenshots", "__pycache__", ".egg-info",
               ".hypothesis", "gpu_results", ".site", ".whl")
    return [p for p in files if not any(part.startswith(ignored) for part in p.relative_to(ROOT).parts)]


def test_the_repository_address_is_set_once():
    urls = pyproject()["project"]["urls"]
    repository, homepage = urls["Repository"], urls["Homepage"]
    owner, name = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", repository).groups()
    assert homepage == f"https://{owner}.github.io/{name}/", "Homepage is not the Pages address"
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["repository"]["url"] == repository
    assert config["html"]["baseurl"] == homepage
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["repository-code"] == repository
    assert citation["url"] == homepage
    assert homepage in (ROOT / "README.md").read_text(encoding="utf-8")
    # Anywhere else the project's address appears, it is one of these two (or a page under them).
    address = re.compile(rf"https?://[^\s\"'<>)\]]*{re.escape(owner)}[^\s\"'<>)\]\\]*", re.IGNORECASE)
    stray = sorted({f"{path.relative_to(ROOT)}: {found}"
                    for path in tracked_text_files()
                    for found in address.findall(path.read_text(encoding="utf-8", errors="ignore"))
                    if not found.startswith((repository, homepage))})
    assert not stray, f"addresses that differ from pyproject.toml's [project.urls]: {stray}"


def test_the_version_is_set_once():
    project = pyproject()["project"]
    assert "version" not in project and "version" in project.get("dynamic", [])
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "tinygrad_birnn.__version__"}
    version = tinygrad_birnn.__version__
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(citation["version"]) == version
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    newest = re.search(r"^## \[(\d[^\]]*)\]", changelog, re.MULTILINE)
    assert newest and newest.group(1) == version, f"CHANGELOG's newest release is not {version}"


def test_the_license_is_mit_everywhere():
    assert pyproject()["project"]["license"] == "MIT"  # an SPDX expression
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["license"] == "MIT"


def test_the_toc_numbers_chapters_sections_and_figures():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    unnumbered = [part["caption"] for part in toc["parts"] if part.get("numbered") is not True]
    assert unnumbered == ["Reference"], f"parts left unnumbered: {unnumbered}"
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["sphinx"]["config"]["numfig"] is True


# --- the API reference covers every public name --------------------------------------------------------

AUTO = re.compile(r"^\.\. auto(function|class|exception|data)::\s+(\S+)", re.MULTILINE)
AUTOMODULE = re.compile(r"^\.\. automodule::\s+(\S+)\n((?:[ \t]+:.*\n?)*)", re.MULTILINE)


def public_objects(module) -> dict[str, object]:
    """The public functions and classes a module defines (or lists in __all__)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, o in vars(module).items()
                 if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
                 and getattr(o, "__module__", None) == module.__name__]
    return {f"{module.__name__}.{n}": getattr(module, n) for n in names
            if inspect.isfunction(getattr(module, n)) or inspect.isclass(getattr(module, n))}


def resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def documented_objects() -> set[int]:
    found = set()
    for page in (ROOT / "book" / "api").glob("*.md"):
        text = page.read_text(encoding="utf-8")
        found.update(id(resolve(name)) for _, name in AUTO.findall(text))
        for module_name, options in AUTOMODULE.findall(text):
            listed = re.search(r":members:(.*)", options)
            if ":no-members:" in options or listed is None:
                continue
            excluded = re.search(r":exclude-members:(.*)", options)
            excluded = {n.strip() for n in excluded.group(1).split(",")} if excluded else set()
            module = importlib.import_module(module_name)
            names = [n.strip() for n in listed.group(1).split(",") if n.strip()]
            objects = ({f"{module_name}.{n}": getattr(module, n) for n in names} if names
                       else public_objects(module))
            found.update(id(o) for k, o in objects.items() if k.rpartition(".")[2] not in excluded)
    return found


def test_api_pages_document_every_public_name():
    documented = documented_objects()
    missing = []
    for info in pkgutil.walk_packages(tinygrad_birnn.__path__, "tinygrad_birnn."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as error:  # e.g. a module that needs CuPy at import
            missing.append(f"{info.name} (cannot be imported here: {error})")
            continue
        missing.extend(name for name, obj in public_objects(module).items() if id(obj) not in documented)
    report("api_pages", [f"{name} is on no page in book/api/" for name in missing], ROOT / "book" / "api")
