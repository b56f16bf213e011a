"""Read your writes: what the CLI just stored counts at once, without waiting for a reload."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raygate.embedded import EmbeddedAuthority
from raygate.identity import Attributes
from raygate.rbac.index import PolicyIndex
from raygate.store.sqlite import ObjectStore
from tests.integration.gateway_helpers import grant, prepare_state, service_account, token_for

GET_CLUSTER = dict(
    verb="get",
    namespace="default",
    api_group="ray.io",
    resource="rayclusters",
    name="ray-cluster-with-auth",
)


def test_new_account_and_binding_count_before_the_next_poll(tmp_path: Path) -> None:
    prepare_state(tmp_path)
    # A poll interval far longer than the test: only read-your-writes can make it pass.
    authority = EmbeddedAuthority(tmp_path, poll_interval=3600)
    try:
        with ObjectStore.open(tmp_path) as cli:  # another connection, as the CLI has
            cli.apply([service_account("fresh")])
            token = token_for(tmp_path, "fresh")
            identity = asyncio.run(authority.authenticator.authenticate_token(token))
            assert identity is not None and identity.user == "system:serviceaccount:default:fresh"
            attributes = Attributes(identity=identity, **GET_CLUSTER)
            assert not asyncio.run(authority.authorizer.authorize(attributes)).allowed
            grant(cli, "fresh", ("get",))
            decision = asyncio.run(authority.authorizer.authorize(attributes))
            assert decision.allowed, decision.reason
    finally:
        authority.store.close()


def test_new_account_counts_when_the_watcher_reloads_while_the_request_waits(
    tmp_path: Path,
) -> None:
    """The watcher thread reloads the new revision while a request waits for the reload lock:
    the request's answer came from the old revision and is asked again, not refused (the
    gateway property test found fresh tokens getting 401 this way)."""
    import threading

    prepare_state(tmp_path)
    authority = EmbeddedAuthority(tmp_path, poll_interval=3600)
    results: list[object] = []
    try:
        with ObjectStore.open(tmp_path) as cli:
            cli.apply([service_account("fresh")])
            token = token_for(tmp_path, "fresh")

            def request() -> None:
                results.append(asyncio.run(authority.authenticator.authenticate_token(token)))

            with authority._reload_lock:  # the watcher holds it while it reloads
                waiting = threading.Thread(target=request)
                waiting.start()
                waiting.join(0.3)  # the request now waits for the lock
                authority._snapshot = authority.store.snapshot()  # the watcher's reload
            waiting.join(10)
        [identity] = results
        assert identity is not None and identity.user == "system:serviceaccount:default:fresh"
    finally:
        authority.store.close()


def test_new_account_counts_when_the_watcher_reloads_between_lookup_and_recheck(
    tmp_path: Path,
) -> None:
    """The watcher thread swaps the new revision in after the request looked the account up in
    the old one and before it checks whether the store changed: the store then looks current,
    and the request must still look again (fresh tokens got 401 this way under load)."""
    prepare_state(tmp_path)
    authority = EmbeddedAuthority(tmp_path, poll_interval=3600)
    try:
        with ObjectStore.open(tmp_path) as cli:
            cli.apply([service_account("fresh")])
            token = token_for(tmp_path, "fresh")
            grant(cli, "fresh", ("get",))
        store_version = authority.store.data_version

        def version_after_the_watcher_reloaded() -> int:
            authority._snapshot = authority.store.snapshot()
            authority._rbac.replace(PolicyIndex.build(authority._snapshot.objects))
            return store_version()

        authority.store.data_version = version_after_the_watcher_reloaded  # type: ignore[method-assign]
        identity = asyncio.run(authority.authenticator.authenticate_token(token))
        assert identity is not None and identity.user == "system:serviceaccount:default:fresh"
        # The same race on the way to a refusal: the policy swapped in allows it.
        authority._rbac.replace(PolicyIndex.build([]))
        decision = asyncio.run(
            authority.authorizer.authorize(Attributes(identity=identity, **GET_CLUSTER))
        )
        assert decision.allowed, decision.reason
    finally:
        authority.store.close()


def test_a_reload_swaps_the_index_in_before_the_snapshot(tmp_path: Path) -> None:
    """Whoever sees the new snapshot (and so finds the store current and does not reload) must
    also see the new index: otherwise a request between the two swaps is denied on the old
    policy (fresh grants got 403 this way under load)."""
    prepare_state(tmp_path)
    authority = EmbeddedAuthority(tmp_path, poll_interval=3600)
    try:
        old_version = authority._snapshot.version
        seen_at_swap: list[int] = []
        replace = authority._rbac.replace

        def recording_replace(index: PolicyIndex) -> None:
            seen_at_swap.append(authority._snapshot.version)
            replace(index)

        authority._rbac.replace = recording_replace  # type: ignore[method-assign]
        with ObjectStore.open(tmp_path) as cli:
            cli.apply([service_account("fresh")])
        assert authority.refresh()
        assert seen_at_swap == [old_version]
        assert authority._snapshot.version != old_version
    finally:
        authority.store.close()


def _counting_reads(authority: EmbeddedAuthority) -> list[int]:
    reads: list[int] = []
    refresh = authority.refresh

    def counted() -> bool:
        reads.append(1)
        return refresh()

    authority.refresh = counted  # type: ignore[method-assign]
    return reads


def test_refusals_with_nothing_written_meanwhile_read_the_store_no_more(tmp_path: Path) -> None:
    """A refusal costs a look at the store's files, not a read in a thread, while nothing was
    written since the last read; the first write after that counts at once."""
    import time

    prepare_state(tmp_path)
    with ObjectStore.open(tmp_path) as cli:
        cli.apply([service_account("waiting")])
    authority = EmbeddedAuthority(tmp_path, poll_interval=3600)  # opening makes the WAL file
    try:
        token = token_for(tmp_path, "waiting")
        time.sleep(0.1)  # the files settle: a change just now may not show in their times

        async def refusals(count: int) -> list[bool]:
            identity = await authority.authenticator.authenticate_token(token)
            assert identity is not None
            attributes = Attributes(identity=identity, **GET_CLUSTER)
            return [(await authority.authorizer.authorize(attributes)).allowed for _ in range(count)]

        reads = _counting_reads(authority)
        assert asyncio.run(refusals(20)) == [False] * 20
        assert len(reads) == 1  # the first refusal reads; the files then show nothing new
        with ObjectStore.open(tmp_path) as cli:
            grant(cli, "waiting", ("get",))
        assert asyncio.run(refusals(1)) == [True]
        assert len(reads) == 2
    finally:
        authority.store.close()


def test_writes_in_quick_succession_each_count_at_once(tmp_path: Path) -> None:
    """Two writes within one tick of the clock that stamps file times: the second is still
    seen by the next refusal's recheck (marks of a file changed just now are not trusted)."""
    prepare_state(tmp_path)
    authority = EmbeddedAuthority(tmp_path, poll_interval=3600)
    try:
        with ObjectStore.open(tmp_path) as cli:
            for n in range(15):
                name = f"quick-{n}"
                cli.apply([service_account(name)])
                token = token_for(tmp_path, name)
                identity = asyncio.run(authority.authenticator.authenticate_token(token))
                assert identity is not None, name
                attributes = Attributes(identity=identity, **GET_CLUSTER)
                assert not asyncio.run(authority.authorizer.authorize(attributes)).allowed
                grant(cli, name, ("get",))  # right after the read the refusal made
                decision = asyncio.run(authority.authorizer.authorize(attributes))
                assert decision.allowed, (name, decision.reason)
    finally:
        authority.store.close()
