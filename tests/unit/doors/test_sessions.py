"""A Ray Client session belongs to the identity that opened it."""

from __future__ import annotations

from raygate.doors.sessions import SessionBindings
from raygate.identity import service_account_identity

ALICE = service_account_identity("default", "alice", "uid-a")
BOB = service_account_identity("default", "bob", "uid-b")
ALICE_RECREATED = service_account_identity("default", "alice", "uid-a2")


def test_the_first_caller_binds_a_client_id_and_may_use_it_again() -> None:
    sessions = SessionBindings()
    assert sessions.claim("c1", ALICE) is None
    assert sessions.claim("c1", ALICE) is None


def test_another_identity_is_told_who_owns_the_session() -> None:
    sessions = SessionBindings()
    sessions.claim("c1", ALICE)
    assert sessions.claim("c1", BOB) == ALICE.user
    assert sessions.claim("c2", BOB) is None


def test_a_recreated_account_of_the_same_name_is_another_identity() -> None:
    sessions = SessionBindings()
    sessions.claim("c1", ALICE)
    assert sessions.claim("c1", ALICE_RECREATED) == ALICE.user


def test_a_binding_idle_longer_than_its_ttl_is_free_again() -> None:
    sessions = SessionBindings(ttl=0.0)
    sessions.claim("c1", ALICE)
    assert sessions.claim("c1", BOB) is None


def test_the_table_is_bounded() -> None:
    sessions = SessionBindings(max_sessions=3)
    for n in range(10):
        sessions.claim(f"c{n}", ALICE)
    assert len(sessions) == 3
