"""Which Serve application serves a path: longest route prefix, segment by segment."""

from __future__ import annotations

import pytest

from raygate.doors.serve_apps import match_application, route_prefixes

# The shape of Ray 2.60's GET /api/serve/applications/ (fields the door reads).
DOCUMENT = {
    "applications": {
        "chat": {"name": "chat", "route_prefix": "/chat", "status": "RUNNING"},
        "chat-admin": {"name": "chat-admin", "route_prefix": "/chat/admin", "status": "RUNNING"},
        "root": {"name": "root", "route_prefix": "/", "status": "RUNNING"},
        "batch": {"name": "batch", "route_prefix": None, "status": "RUNNING"},
    }
}


@pytest.mark.parametrize(
    ("path", "application"),
    [
        ("/chat", "chat"),
        ("/chat/v1/chat/completions", "chat"),
        ("/chat/admin/v1/models", "chat-admin"),
        ("/chatter", "root"),
        ("/", "root"),
        ("/other/x", "root"),
    ],
)
def test_the_longest_matching_prefix_wins(path: str, application: str) -> None:
    assert match_application(route_prefixes(DOCUMENT), path) == application


def test_applications_without_http_ingress_are_not_routes() -> None:
    assert "batch" not in route_prefixes(DOCUMENT).values()


def test_no_application_matches_without_a_root_route() -> None:
    routes = route_prefixes({"applications": {"chat": {"route_prefix": "/chat/"}}})
    assert match_application(routes, "/chat/x") == "chat"
    assert match_application(routes, "/admin") == ""


def test_an_empty_or_malformed_list() -> None:
    assert route_prefixes({}) == {}
    with pytest.raises(ValueError):
        route_prefixes({"applications": ["chat"]})
