"""`raygate up --workers 2`: two processes answer on one port, see the store's changes within a
second, count into one set of metrics and write one audit log of whole lines."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from raygate.store.sqlite import ObjectStore

from .blackbox import Gateway, RecorderThread, free_port, start_gateway, stop_gateway

REQUESTS = 200


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # a new connection each
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Gateway, int]]:
    upstream = RecorderThread()
    admin_port = free_port()
    gateway = start_gateway(
        tmp_path,
        upstream.url,
        {"reader": ["get"], "newcomer": None},
        ["--workers", "2", "--admin-port", str(admin_port)],
    )
    try:
        yield gateway, admin_port
    finally:
        stop_gateway(gateway)
        upstream.stop()


def _wait_for_workers(gateway: Gateway) -> None:
    deadline = time.monotonic() + 30
    while "raygate is up." not in gateway.log():  # printed once every worker listens
        assert time.monotonic() < deadline, gateway.log()
        assert gateway.process.poll() is None, gateway.log()
        time.sleep(0.1)


def test_two_workers_answer_count_and_audit_as_one(two_workers: tuple[Gateway, int]) -> None:
    gateway, admin_port = two_workers
    _wait_for_workers(gateway)
    token = gateway.token("reader")
    url = f"{gateway.url}/api/version"
    statuses = [_get(url, token) for _ in range(REQUESTS)]
    assert statuses == [200] * REQUESTS

    # The kernel spread the connections over both processes: request ids carry the worker's
    # pid, and the audit log holds one whole JSON line per request from both.
    deadline = time.monotonic() + 10
    while len(gateway.audit_path.read_text().splitlines()) < REQUESTS:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    raw = gateway.audit_path.read_text()
    assert raw.endswith("\n")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert len(lines) == REQUESTS
    assert {line["decision"] for line in lines} == {"allow"}
    workers = {line["requestId"][:4] for line in lines}
    assert len(workers) == 2, workers

    # One /metrics for both: every request counted once (workers publish their counts within
    # a second).
    time.sleep(1.5)
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    found = re.search(r'^raygate_requests_total\{code="200"\} (\S+)$', metrics, re.M)
    assert found is not None, metrics
    assert float(found.group(1)) == REQUESTS


def test_a_store_change_reaches_both_workers_within_a_second(
    two_workers: tuple[Gateway, int],
) -> None:
    gateway, _ = two_workers
    _wait_for_workers(gateway)
    token = gateway.token("newcomer")
    url = f"{gateway.url}/api/version"
    assert {_get(url, token) for _ in range(20)} == {403}
    gateway.add_accounts({"newcomer": ["get"]})  # `raygate apply` of a Role and RoleBinding
    changed = time.monotonic()
    time.sleep(1.0)
    # Both workers answer these (fresh connections): each must know the new binding by now.
    answers = [_get(url, token) for _ in range(40)]
    assert time.monotonic() - changed < 10
    assert answers == [200] * 40
    # Audit lines reach the file within a second (the writers batch them).
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in gateway.audit_path.read_text().splitlines()]
        allowed_by = {line["requestId"][:4] for line in lines if line["decision"] == "allow"}
        if len(allowed_by) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(allowed_by) == 2

    with ObjectStore.open(gateway.state) as store:
        store.delete("RoleBinding", "newcomer", "default")
    time.sleep(1.0)
    assert {_get(url, token) for _ in range(40)} == {403}
