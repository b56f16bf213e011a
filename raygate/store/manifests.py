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

from raygate.errors import ConfigError, ManifestError
from raygate.objects import NAMESPACED_KINDS, describe_document, parse_object, with_namespace
from raygate.store.sqlite import DEFAULT_NAMESPACE, StoredObject

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings: `creationTimestamp: 2024-01-01T00:00:00Z`
    from `get -o yaml` output must round-trip as the string Kubernetes means."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


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


def read_sources(paths: Sequence[str], stdin: IO[str] | None = None) -> Iterator[tuple[str, str]]:
    """(label, text) for every `-f` argument: a file, a directory's manifest files, or `-`."""
    for raw in paths:
        if raw == STDIN:
            yield "<stdin>", (stdin or sys.stdin).read()
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
            try:
                yield str(file), file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(f"cannot read {file}: {err}") from None


def _json_documents(text: str, source: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
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
        index += 1
        yield body


def _yaml_documents(text: str, source: str) -> Iterator[Any]:
    index = 0
    try:
        for body in yaml.load_all(text, Loader=_Loader):  # noqa: S506 - a SafeLoader subclass
            index += 1
            yield body
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ManifestError(
            f"{source} document {index + 1}: YAML syntax error{where}: {problem}"
        ) from None


def split_documents(text: str, source: str) -> list[Document]:
    """The documents of one file: JSON (one or more values) or multi-document YAML."""
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
