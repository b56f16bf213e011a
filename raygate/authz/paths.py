"""`allowPaths` / `ignorePaths`, as kube-rbac-proxy's `--allow-paths` / `--ignore-paths`. Pure.

- ignore: a matching path is forwarded without authentication or authorization;
- allow: only matching paths are served at all, any other path gets 404 (with authorization
  still applied to the ones that match).

Patterns are Go `path.Match` globs: `*` is any run of characters but `/`, `?` one character but
`/`, `[a-z]` / `[^a-z]` a class, `\\` escapes. A pattern matches the whole path.

Matching runs on the raw request path, the one forwarded upstream. Do better than
kube-rbac-proxy: a path with dot segments (`/a/../b`), empty segments (`//`) or encoded
separators or dots (`%2F`, `%2E`, `%5C`) could mean something else to the upstream than to the
glob, so it never counts as ignored, and with `allowPaths` it is not found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class PathAction(StrEnum):
    AUTHORIZE = "authorize"  # authenticate and authorize as usual
    SKIP_AUTH = "skip-auth"  # forward without authentication (ignorePaths)
    NOT_FOUND = "not-found"  # answer 404, forward nothing (outside allowPaths)


_AMBIGUOUS_ENCODINGS = ("%2f", "%2e", "%5c")


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character of a `[...]` class starting at i -> (char, next i)."""
    if i >= len(pattern):
        raise ValueError("unterminated character class")
    char = pattern[i]
    if char == "\\":
        if i + 1 >= len(pattern):
            raise ValueError("trailing backslash")
        return pattern[i + 1], i + 2
    if char in "-]":
        raise ValueError(f"unexpected {char!r} in character class")
    return char, i + 1


def _translate_class(pattern: str, i: int) -> tuple[str, int]:
    """Translate `[...]` whose `[` is at i-1 -> (regex, index after `]`)."""
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    items: list[str] = []
    while True:
        if i < len(pattern) and pattern[i] == "]" and items:
            i += 1
            break
        low, i = _class_char(pattern, i)
        item = re.escape(low)
        if i < len(pattern) and pattern[i] == "-":
            high, i = _class_char(pattern, i + 1)
            if high < low:
                raise ValueError(f"bad range {low}-{high}")
            item = f"{re.escape(low)}-{re.escape(high)}"
        items.append(item)
    body = "".join(items)
    # A class never matches "/": a glob names characters within one path segment.
    return (f"(?:(?!/)[^{body}])" if negated else f"(?:(?!/)[{body}])"), i


def compile_path_pattern(pattern: str) -> re.Pattern[str]:
    """A Go `path.Match` glob as a compiled regex matching whole paths; ValueError if malformed."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            parts.append("[^/]*")
            i += 1
        elif char == "?":
            parts.append("[^/]")
            i += 1
        elif char == "[":
            regex, i = _translate_class(pattern, i + 1)
            parts.append(regex)
        elif char == "\\":
            if i + 1 >= len(pattern):
                raise ValueError(f"bad pattern {pattern!r}: trailing backslash")
            parts.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            parts.append(re.escape(char))
            i += 1
    return re.compile("".join(parts), re.DOTALL)


def validate_path_pattern(pattern: str) -> str:
    try:
        compile_path_pattern(pattern)
    except ValueError as err:
        raise ValueError(f"bad path pattern {pattern!r}: {err}") from None
    return pattern


def is_unambiguous_path(raw_path: str) -> bool:
    """False for paths an upstream might resolve differently from a glob (see module doc)."""
    lowered = raw_path.lower()
    if "\\" in raw_path or any(code in lowered for code in _AMBIGUOUS_ENCODINGS):
        return False
    segments = raw_path.split("/")[1:]
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            return False
        if segment == "" and index != len(segments) - 1:  # `//`; a trailing `/` is fine
            return False
    return raw_path.startswith("/")


@dataclass(frozen=True)
class PathPolicy:
    """Compiled allow/ignore patterns; at most one of the two lists is non-empty."""

    allow: tuple[re.Pattern[str], ...] = ()
    ignore: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def compile(cls, allow_paths: Iterable[str], ignore_paths: Iterable[str]) -> PathPolicy:
        allow = tuple(compile_path_pattern(p) for p in allow_paths)
        ignore = tuple(compile_path_pattern(p) for p in ignore_paths)
        if allow and ignore:
            raise ValueError("allowPaths and ignorePaths cannot be used together")
        return cls(allow=allow, ignore=ignore)

    def action(self, raw_path: str) -> PathAction:
        """What to do with a request for `raw_path` (query already removed)."""
        if self.allow:
            if is_unambiguous_path(raw_path) and any(p.fullmatch(raw_path) for p in self.allow):
                return PathAction.AUTHORIZE
            return PathAction.NOT_FOUND
        if self.ignore and is_unambiguous_path(raw_path):
            if any(p.fullmatch(raw_path) for p in self.ignore):
                return PathAction.SKIP_AUTH
        return PathAction.AUTHORIZE
