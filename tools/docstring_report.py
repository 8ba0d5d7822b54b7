"""List, per module, the public names whose docstrings the API reference (book/api/) needs filled in.

For each public function, class and method of the library, reports:
- ``missing``: no docstring (the API page shows a bare signature; ``help()`` may show instead the
  comment above the definition, such as a section divider, which it takes for documentation);
- ``no Args``: a function or method with two or more parameters whose docstring describes none of them
  (no ``Args:``/``Parameters`` section);
- for a module (an ``nn.Module`` subclass): ``no Args`` for its constructor's parameters, ``no Shape`` (no
  ``Shape:``/``Inputs:``/``Outputs:`` section giving the input and output shapes) and ``no Example``.

Usage: python tools/docstring_report.py [MODULE ...]   (default: every module of tinygrad_birnn)
It only reports; it exits 0.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys

import tinygrad_birnn

ARGS = re.compile(r"^\s*(Args|Arguments|Parameters|Keyword Args)\s*:?\s*$", re.MULTILINE)
SHAPE = re.compile(r"^\s*(Shape|Inputs|Outputs)\s*:?\s*$", re.MULTILINE)
EXAMPLE = re.compile(r"^\s*(Example|Examples)\s*:?\s*$|>>>", re.MULTILINE)


def public_modules() -> list[str]:
    names = ["tinygrad_birnn"]
    for info in pkgutil.walk_packages(tinygrad_birnn.__path__, "tinygrad_birnn."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def parameters(function) -> list[str]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    return [p for p in signature.parameters if p not in ("self", "cls")]


def function_problems(function) -> list[str]:
    doc = inspect.getdoc(function) or ""
    if not doc:
        comment = inspect.getcomments(function)
        return ["missing" + (" (help() shows the comment above it)" if comment else "")]
    if len(parameters(function)) >= 2 and not ARGS.search(doc):
        return ["no Args"]
    return []


def class_problems(cls) -> list[str]:
    doc = inspect.getdoc(cls) if cls.__doc__ else ""
    if not doc:
        return ["missing"]
    problems = []
    from tinygrad_birnn.nn import Module  # noqa: PLC0415

    is_layer = issubclass(cls, Module) and cls is not Module  # a layer, not the base class
    if (is_layer or len(parameters(cls)) >= 2) and not ARGS.search(doc):
        init_doc = inspect.getdoc(cls.__init__) if "__init__" in vars(cls) and cls.__init__.__doc__ else ""
        if not ARGS.search(init_doc or ""):
            problems.append("no Args")
    if is_layer and not SHAPE.search(doc):
        problems.append("no Shape")
    if is_layer and not EXAMPLE.search(doc):
        problems.append("no Example")
    return problems


def report(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    lines = []
    if not (module.__doc__ or "").strip():
        lines.append("  (module docstring) missing")
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isfunction(obj):
            lines += [f"  {name}(): {p}" for p in function_problems(obj)]
        elif inspect.isclass(obj):
            lines += [f"  {name}: {p}" for p in class_problems(obj)]
            for method_name, method in vars(obj).items():
                if not method_name.startswith("_") and inspect.isfunction(method):
                    lines += [f"  {name}.{method_name}(): {p}" for p in function_problems(method)]
    return lines


if __name__ == "__main__":
    for module_name in sys.argv[1:] or public_modules():
        found = report(module_name)
        print(f"{module_name}: {len(found)} to fill in" + ("" if found else " (none)"))
        for line in found:
            print(line)
