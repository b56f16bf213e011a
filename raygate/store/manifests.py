"""Manifests from files, directories or stdin (`-f`), as kubectl reads them.

Multi-document YAML and JSON; `kind: List` expanded; empty documents skipped. Every document is
validated before anything is stored, and the first problem is reported as one line naming the
file, the document and the field (`ManifestError`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from raygate.errors import ConfigError, ManifestError, RefusedDocument
from raygate.objects import NAMESPACED_KINDS, describe_document, parse_object, with_namespace
from raygate.store.sqlite import DEFAULT_NAMESPACE, StoredObject

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


# One `-f` source is read whole before anything is validated: bound what that may cost.
MAX_SOURCE_BYTES = 4 * 1024 * 1024
# Aliases let a few hundred bytes stand for billions of nodes once expanded (validation and
# storage walk the expansion), so a document may use a few and expand to a bounded size.
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 1_000_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _refused(message: str, mark: yaml.Mark | None) -> RefusedDocument:
    """A document we will not load, at the parser's mark."""
    return RefusedDocument(message, *((mark.line, mark.column) if mark else (None, None)))


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings: `creationTimestamp: 2024-01-01T00:00:00Z`
    from `get -o yaml` output must round-trip as the string Kubernetes means.

    It also refuses what kubectl refuses or what would cost unbounded time and memory:
    duplicate keys in a mapping (the last one would silently win), and alias bombs.
    """

    _aliases = 0

    def compose_document(self) -> yaml.Node | None:
        self._aliases = 0
        node = super().compose_document()
        if self._aliases and node is not None:
            _expanded_size(node, {}, set())
        return node

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _refused(f"more than {MAX_ALIASES} aliases (*name) in one document", mark)
        return super().compose_node(parent, index)  # type: ignore[no-any-return]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Checked on the node's own keys, before `<<` merges: a merge may be overridden.
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it below
                if first is not None:
                    raise _refused(
                        f"duplicate key {json.dumps(str(key))} (first at line {first + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many nodes `node` stands for once every alias is expanded (memoized, so linear in
    the document); raises RefusedDocument past MAX_EXPANDED_NODES or on an alias to itself."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _refused("an alias refers to a node that contains it", node.start_mark)
    open_nodes.add(key)
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_nodes)
        if total > MAX_EXPANDED_NODES:
            raise _refused(
                f"aliases expand the document beyond {MAX_EXPANDED_NODES} nodes",
                node.start_mark,
            )
    open_nodes.discard(key)
    sizes[key] = total
    return total


@dataclass(frozen=True)
class Document:
    """One decoded manifest document and where it came from, for error messages."""

    source: str
    index: int  # 0-based position in its file
    body: Any
    item: int | None = None  # position inside a `kind: List`

    def where(self) -> str:
        label = f"{self.source} document {self.index + 1}"
        return label if self.item is None else f"{label} items[{self.item}]"


def _too_large(label: str) -> ManifestError:
    return ManifestError(
        f"{label} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MiB: "
        "split it into several manifest files"
    )


def _check_size(text: str, label: str) -> str:
    if len(text) > MAX_SOURCE_BYTES or len(text.encode("utf-8", "surrogateescape")) > (
        MAX_SOURCE_BYTES
    ):
        raise _too_large(label)
    return text


def _read_file(file: Path) -> str:
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES + 1)
        if len(data) > MAX_SOURCE_BYTES:
            raise _too_large(str(file))
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {file}: {err}") from None


def read_sources(paths: Sequence[str], stdin: IO[str] | None = None) -> Iterator[tuple[str, str]]:
    """(label, text) for every `-f` argument: a file, a directory's manifest files, or `-`.

    A source larger than MAX_SOURCE_BYTES is refused (ManifestError) without reading it all.
    """
    for raw in paths:
        if raw == STDIN:
            text = (stdin or sys.stdin).read(MAX_SOURCE_BYTES + 1)
            yield "<stdin>", _check_size(text, "<stdin>")
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()
            )
        elif path.exists():
            files = [path]
        else:
            raise ConfigError(f'the path "{raw}" does not exist')
        for file in files:
            yield str(file), _read_file(file)


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise RefusedDocument(f"duplicate key {json.dumps(key)}")
        mapping[key] = value
    return mapping


def _json_documents(text: str, source: str) -> Iterator[Any]:
    decoder = json.JSONDecoder(object_pairs_hook=_refuse_duplicate_keys)
    position = 0
    index = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return
        try:
            body, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise ManifestError(
                f"{source} document {index + 1}: JSON syntax error at line {err.lineno}, "
                f"column {err.colno}: {err.msg}"
            ) from None
        except RefusedDocument as err:
            # The hook is not told where the object is: name where its document starts.
            line = text.count("\n", 0, position) + 1
            raise ManifestError(
                f"{source} document {index + 1} (starting at line {line}): {err.message}"
            ) from None
        index += 1
        yield body


def _yaml_documents(text: str, source: str) -> Iterator[Any]:
    index = 0
    try:
        for body in yaml.load_all(text, Loader=_Loader):  # noqa: S506 - a SafeLoader subclass
            index += 1
            yield body
    except RefusedDocument as err:
        where = "" if err.line is None else f" at line {err.line + 1}, column {(err.column or 0) + 1}"
        raise ManifestError(f"{source} document {index + 1}{where}: {err.message}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ManifestError(
            f"{source} document {index + 1}: YAML syntax error{where}: {problem}"
        ) from None


def split_documents(text: str, source: str) -> list[Document]:
    """The documents of one file: JSON (one or more values) or multi-document YAML."""
    _check_size(text, source)
    stripped = text.lstrip()
    decode = _json_documents if stripped.startswith(("{", "[")) else _yaml_documents
    documents: list[Document] = []
    for index, body in enumerate(decode(text, source)):
        if body is None:
            continue  # an empty YAML document (`---` at the end), as kubectl skips it
        if isinstance(body, dict) and body.get("kind") == "List":
            items = body.get("items")
            if not isinstance(items, list):
                raise ManifestError(
                    f"{source} document {index + 1} (List): field items: expected a list"
                )
            documents.extend(Document(source, index, item, n) for n, item in enumerate(items))
        else:
            documents.append(Document(source, index, body))
    return documents


def parse_documents(documents: Sequence[Document], namespace: str | None) -> list[StoredObject]:
    """Validate every document; namespaced objects without one get `namespace` (else default).

    An explicit `namespace` that differs from an object's own is refused, as kubectl refuses it.
    """
    objects: list[StoredObject] = []
    for doc in documents:
        if doc.item is None:
            obj = parse_object(doc.body, doc.index, doc.source)
        else:
            obj = parse_object(doc.body, None, doc.where())
        own = obj.metadata.namespace
        if namespace and own and own != namespace and obj.kind in NAMESPACED_KINDS:
            what = describe_document(doc.body, None, doc.where())
            raise ManifestError(
                f'{what}: the namespace from the provided object "{own}" does not match the '
                f"namespace \"{namespace}\". You must pass '--namespace={own}' to perform this "
                "operation."
            )
        objects.append(with_namespace(obj, namespace or DEFAULT_NAMESPACE))  # type: ignore[arg-type]
    return objects


def load_manifests(
    paths: Sequence[str], *, namespace: str | None = None, stdin: IO[str] | None = None
) -> list[StoredObject]:
    """Every object named by `-f` arguments, validated; ManifestError/ConfigError on the first
    problem, before anything is stored."""
    documents: list[Document] = []
    for source, text in read_sources(paths, stdin):
        documents.extend(split_documents(text, source))
    return parse_documents(documents, namespace)
