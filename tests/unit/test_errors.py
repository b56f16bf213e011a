"""Every exception type raygate defines lives in raygate/errors.py, so a caller finds them all
in one place and each one's place in the hierarchy is visible at a glance."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import raygate
from raygate import errors

ROOT = Path(raygate.__file__).parent
_EXCEPTION_BASE = re.compile(r"(Error|Exception|Exit|Abort|Warning|Unavailable)$")


def _modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts != ("__main__",) and parts != ("errors",):
            names.append("raygate." + ".".join(parts))
    return names


def _base_name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def test_no_module_but_errors_defines_an_exception_type() -> None:
    outside = []
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                outside.append(f"{name}.{attr}")
    assert outside == []


def test_no_exception_type_is_defined_inside_a_function_either() -> None:
    outside = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                _EXCEPTION_BASE.search(_base_name(base)) for base in node.bases
            ):
                outside.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}")
    assert outside == []


def test_every_error_is_a_raygate_error() -> None:
    defined = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    assert len(defined) > 5
    assert all(issubclass(cls, errors.RaygateError) for cls in defined)


@pytest.mark.parametrize(
    ("error", "base"),
    [
        (errors.UsageError, errors.ConfigError),
        (errors.RefusedDocument, errors.ManifestError),
        (errors.AlreadyExistsError, errors.StoreError),
    ],
)
def test_specific_errors_are_caught_by_their_general_kind(
    error: type[Exception], base: type[Exception]
) -> None:
    assert issubclass(error, base)
