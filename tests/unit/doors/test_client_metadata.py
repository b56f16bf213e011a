"""What of a Ray Client call's metadata reaches Ray's client server."""

from __future__ import annotations

import pytest

from raygate.doors.client import read_metadata


def test_the_credential_and_session_are_read_and_the_rest_goes_upstream() -> None:
    authorization, client_id, forwarded = read_metadata(
        [
            ("authorization", "Bearer t"),
            ("client_id", "abc"),
            ("reconnect_grace_period", "30"),
            ("user-agent", "grpc-python"),
            ("grpc-accept-encoding", "gzip"),
        ]
    )
    assert (authorization, client_id) == ("Bearer t", "abc")
    assert forwarded == [("client_id", "abc"), ("reconnect_grace_period", "30")]


@pytest.mark.parametrize(
    "key",
    [
        "x-remote-user",
        "x-remote-group",
        "x-remote-extra-scopes",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
        "x-ray-authorization",
    ],
)
def test_a_callers_word_on_who_or_where_it_is_never_reaches_ray(key: str) -> None:
    _, _, forwarded = read_metadata([(key, "system:masters"), ("client_id", "abc")])
    assert forwarded == [("client_id", "abc")]


def test_a_binary_authorization_value_is_no_credential() -> None:
    authorization, _, forwarded = read_metadata([("authorization", b"Bearer t")])
    assert authorization is None and forwarded == []
