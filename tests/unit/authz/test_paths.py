"""allowPaths / ignorePaths: Go path.Match globs and what the gateway does with a path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raygate.authz.paths import (
    PathAction,
    PathPolicy,
    compile_path_pattern,
    is_unambiguous_path,
)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/healthz", "/healthz", True),
        ("/healthz", "/healthz/", False),
        ("/healthz", "/healthzz", False),
        ("/api/*", "/api/jobs", True),
        ("/api/*", "/api/jobs/1", False),  # * stays within one segment
        ("/api/*", "/api/", True),
        ("/api/*/logs", "/api/x/logs", True),
        ("/a?c", "/abc", True),
        ("/a?c", "/a/c", False),
        ("/v[0-9]", "/v1", True),
        ("/v[0-9]", "/vx", False),
        ("/v[^0-9]", "/vx", True),
        ("/v[^0-9]", "/v/", False),  # a class never matches '/'
        ("/a\\*b", "/a*b", True),
        ("/a\\*b", "/axb", False),
        ("/metrics.*", "/metricsXjson", False),  # '.' is literal
        ("/metrics.*", "/metrics.json", True),
    ],
)
def test_go_path_match(pattern: str, path: str, matches: bool) -> None:
    assert bool(compile_path_pattern(pattern).fullmatch(path)) is matches


@pytest.mark.parametrize("pattern", ["/a[", "/a[]", "/a\\", "/a[z-a]", "/a[-]", "/a[b-"])
def test_malformed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        compile_path_pattern(pattern)


@pytest.mark.parametrize(
    ("path", "plain"),
    [
        ("/api/jobs/", True),
        ("/api/jobs/x", True),
        ("/healthz/../api/jobs/", False),
        ("/./healthz", False),
        ("//healthz", False),
        ("/static/..%2Fapi", False),
        ("/static/%2e%2e/api", False),
        ("/static\\..\\api", False),
        ("healthz", False),
    ],
)
def test_ambiguous_paths(path: str, plain: bool) -> None:
    assert is_unambiguous_path(path) is plain


IGNORE = PathPolicy.compile([], ["/healthz", "/static/*"])
ALLOW = PathPolicy.compile(["/api/*", "/api/jobs/*"], [])


@pytest.mark.parametrize(
    ("policy", "path", "action"),
    [
        (PathPolicy(), "/anything", PathAction.AUTHORIZE),
        (IGNORE, "/healthz", PathAction.SKIP_AUTH),
        (IGNORE, "/static/app.js", PathAction.SKIP_AUTH),
        (IGNORE, "/api/jobs/", PathAction.AUTHORIZE),
        (IGNORE, "/static/..%2Fapi%2Fjobs", PathAction.AUTHORIZE),
        (IGNORE, "/static/../api", PathAction.AUTHORIZE),
        (ALLOW, "/api/version", PathAction.AUTHORIZE),
        (ALLOW, "/api/jobs/raysubmit_1", PathAction.AUTHORIZE),
        (ALLOW, "/", PathAction.NOT_FOUND),
        (ALLOW, "/api/jobs/x/logs", PathAction.NOT_FOUND),
        (ALLOW, "/api/../metrics", PathAction.NOT_FOUND),
    ],
)
def test_path_policy(policy: PathPolicy, path: str, action: PathAction) -> None:
    assert policy.action(path) is action


def test_allow_and_ignore_together_are_refused() -> None:
    with pytest.raises(ValueError, match="together"):
        PathPolicy.compile(["/a"], ["/b"])


@given(st.text(alphabet="/ab*?[]^-\\.%2fF", max_size=12))
def test_any_pattern_compiles_or_is_refused_with_value_error(pattern: str) -> None:
    try:
        compiled = compile_path_pattern(pattern)
    except ValueError:
        return
    if not any(special in pattern for special in "*?[\\"):
        assert compiled.fullmatch(pattern) is not None  # plain text matches itself


@given(st.text(alphabet="/ab.%2fF\\", max_size=16))
def test_star_never_crosses_a_segment(path: str) -> None:
    matched = compile_path_pattern("/*").fullmatch(path) is not None
    assert matched == (path.startswith("/") and path.count("/") == 1)
