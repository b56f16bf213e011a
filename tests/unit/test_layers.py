"""raygate's layers: every import points down or sideways, never up, and no two packages import
each other, directly or round a loop.

    0 shared types   identity, errors, durations, fileid, cache, objects (and raygate/__init__)
    1 pure logic     rbac, authz (request -> attributes, paths, cached decisions), ray.routes,
                     config (the validated model)
    2 backends       store, kube (API client, TokenReview, SubjectAccessReview), authn (embedded
                     tokens, OIDC, client certificates), embedded (the store as an authority),
                     observe, ray (the launcher)
    3 assembly       proxy, pipeline, dataplane, doors, sso, runtime, workers, deploy
    4 CLI            cli, __main__

The graph is read from the source with `ast`, so imports inside functions count as much as
those at the top of a module. A package not listed here fails the test until it is given a
layer on purpose.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import raygate

ROOT = Path(raygate.__file__).parent

SHARED, LOGIC, BACKENDS, ASSEMBLY, CLI = range(5)
LAYER_NAMES = ("shared types", "pure logic", "backends", "assembly", "CLI")

# Dotted names below `raygate`; the longest prefix of a module's name gives its layer.
LAYERS: Mapping[str, int] = {
    "": SHARED,  # raygate/__init__.py
    "identity": SHARED,
    "errors": SHARED,
    "durations": SHARED,
    "fileid": SHARED,  # a file's identity (device, inode): used by the store and the audit log
    "cache": SHARED,
    "objects": SHARED,
    "rbac": LOGIC,
    "authz": LOGIC,
    "ray.routes": LOGIC,
    "config": LOGIC,
    "store": BACKENDS,
    "kube": BACKENDS,
    "authn": BACKENDS,
    "embedded": BACKENDS,
    "observe": BACKENDS,
    "ray": BACKENDS,
    "proxy": ASSEMBLY,
    "pipeline": ASSEMBLY,
    "dataplane": ASSEMBLY,
    "doors": ASSEMBLY,
    "sso": ASSEMBLY,
    "runtime": ASSEMBLY,
    "workers": ASSEMBLY,
    "deploy": ASSEMBLY,
    "cli": CLI,
    "__main__": CLI,
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted below raygate ("" for raygate/__init__)
    target: str  # the imported module, dotted below raygate
    line: int

    def __str__(self) -> str:
        return (
            f"raygate.{self.source or '__init__'} (line {self.line}) imports raygate.{self.target}"
        )


def package_of(module: str) -> str:
    """The unit cycles are checked between: a subpackage, or a top-level module."""
    return module.split(".")[0]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), -1, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None and (end > 0 or module == ""):
            return layer
    return None


def module_names() -> list[str]:
    """Every module under raygate, dotted below it ("" for raygate/__init__)."""
    names = [""]
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            names.append(".".join(parts))
    return names


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _resolve(dotted: str) -> str | None:
    """The longest prefix of `dotted` (below raygate) that is a module: `from raygate.x import
    name` imports raygate.x, `from raygate.x import sub` imports raygate.x.sub."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if _is_module(candidate):
            return candidate
    return "" if dotted else None


def imports_of(module: str) -> list[Import]:
    """Every import of a raygate module in `module`'s source."""
    path = ROOT.joinpath(*module.split(".")) if module else ROOT
    is_package = (path / "__init__.py").is_file()
    source_file = path / "__init__.py" if is_package else path.with_suffix(".py")
    return imports_in(source_file.read_text(), module, is_package=is_package)


def imports_in(source: str, module: str, *, is_package: bool) -> list[Import]:
    """Every import of a raygate module in `source`, at any depth (functions included)."""
    parts = module.split(".") if module else []
    package = parts if is_package else parts[:-1]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [
                alias.name.removeprefix("raygate.")
                for alias in node.names
                if alias.name.startswith("raygate.")
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                base_name = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == "raygate":
                base_name = ""
            elif node.module and node.module.startswith("raygate."):
                base_name = node.module.removeprefix("raygate.")
            else:
                continue
            names = [".".join(filter(None, [base_name, alias.name])) for alias in node.names]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.append(Import(module, target, node.lineno))
    return found


def all_imports() -> list[Import]:
    return [imp for module in module_names() for imp in imports_of(module)]


def package_cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one package (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        source, target = package_of(imp.source), package_of(imp.target)
        graph.setdefault(source, set())
        graph.setdefault(target, set())
        if source != target:
            graph[source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def upward_imports(imports: Iterable[Import]) -> list[str]:
    return [
        f"{imp}: {LAYER_NAMES[low]} must not import {LAYER_NAMES[high]}"
        for imp in imports
        if (low := layer_of(imp.source)) is not None
        and (high := layer_of(imp.target)) is not None
        and high > low
    ]


# -- the checks ------------------------------------------------------------------------------


# raygate/__main__.py runs the CLI when imported; the CLI's tests run it.
@pytest.mark.parametrize(
    "module", [name for name in module_names() if name not in ("", "__main__")]
)
def test_every_module_imports(module: str) -> None:
    importlib.import_module(f"raygate.{module}")


def test_every_module_has_a_layer() -> None:
    assert [name for name in module_names() if layer_of(name) is None] == []


def test_no_import_cycle_between_packages() -> None:
    imports = all_imports()
    cycles = package_cycles(imports)
    evidence = sorted(
        {
            str(imp)
            for group in cycles
            for imp in imports
            if package_of(imp.source) in group
            and package_of(imp.target) in group
            and package_of(imp.source) != package_of(imp.target)
        }
    )
    assert cycles == [], "packages that import each other:\n" + "\n".join(evidence)


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports(all_imports()) == []


# -- the checker itself, on graphs made up for the purpose -------------------------------------


def test_the_checker_finds_a_cycle_round_three_packages() -> None:
    imports = [Import("a.x", "b.y", 1), Import("b.y", "c", 2), Import("c", "a", 3)]
    imports.append(Import("d", "a.x", 4))  # d leans on the loop but is not part of it
    assert package_cycles(imports) == [["a", "b", "c"]]


def test_the_checker_ignores_imports_within_a_package() -> None:
    assert package_cycles([Import("a.x", "a.y", 1), Import("a.y", "a.x", 2)]) == []


def test_the_checker_finds_an_upward_import() -> None:
    violations = upward_imports([Import("rbac.index", "store.sqlite", 7)])
    assert violations == [
        "raygate.rbac.index (line 7) imports raygate.store.sqlite: "
        "pure logic must not import backends"
    ]
    assert upward_imports([Import("store.sqlite", "rbac.index", 7)]) == []


def test_the_checker_sees_every_spelling_of_an_import() -> None:
    source = (
        "import json\n"
        "import raygate.errors\n"
        "from raygate import identity, __version__\n"
        "from . import evaluate\n"
        "from .index import PolicyIndex\n"
        "def later():\n"
        "    from raygate.cli.main import main\n"
        "    return main\n"
    )
    imports = imports_in(source, "rbac.authorizer", is_package=False)
    assert [(imp.target, imp.line) for imp in imports] == [
        ("errors", 2),
        ("identity", 3),
        ("", 3),
        ("rbac.evaluate", 4),
        ("rbac.index", 5),
        ("cli.main", 7),
    ]
    assert upward_imports(imports) == [
        "raygate.rbac.authorizer (line 7) imports raygate.cli.main: pure logic must not import CLI"
    ]


def test_a_more_specific_layer_wins() -> None:
    assert layer_of("ray.routes") == LOGIC
    assert layer_of("ray.launcher") == BACKENDS
    assert layer_of("") == SHARED
    assert layer_of("unlisted.module") is None
