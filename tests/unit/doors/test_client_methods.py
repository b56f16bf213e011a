"""The Ray Client door handles each of Ray's methods with the shape Ray's proto gives it."""

from __future__ import annotations

import pytest

from raygate.doors.client import STREAMS, UNARY_SERVICE, UNARY_STREAM_METHODS

ray_client_pb2 = pytest.importorskip("ray.core.generated.ray_client_pb2")


def door_shape(method: str) -> tuple[bool, bool]:
    """(client streams, server streams) as the door relays `method`."""
    if method in UNARY_STREAM_METHODS:
        return False, True
    if method.startswith(UNARY_SERVICE) and method not in STREAMS:
        return False, False
    return True, True


def test_every_ray_client_method_is_relayed_with_its_own_shape() -> None:
    methods = [
        (f"/{service.full_name}/{method.name}", method)
        for service in ray_client_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert methods
    for name, method in methods:
        assert door_shape(name) == (method.client_streaming, method.server_streaming), name


def test_the_session_streams_are_the_bidirectional_ones() -> None:
    assert STREAMS == {
        "/ray.rpc.RayletDataStreamer/Datapath",
        "/ray.rpc.RayletLogStreamer/Logstream",
    }
