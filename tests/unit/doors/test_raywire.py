"""The Ray Client messages the door reads and writes by hand, checked against Ray's own
generated protobuf classes."""

from __future__ import annotations

import pytest

from raygate.doors.raywire import (
    PING_REQUEST,
    PING_RESPONSE,
    RAY_STARTUP_NOTE,
    explain_ray_startup_failure,
    init_response,
)

ray_client_pb2 = pytest.importorskip("ray.core.generated.ray_client_pb2")


def test_the_ping_bytes_are_rays_ping() -> None:
    request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
    assert request.SerializeToString() == PING_REQUEST
    response = ray_client_pb2.ClusterInfoResponse()
    response.ParseFromString(PING_RESPONSE)
    assert response.type == ray_client_pb2.ClusterInfoType.PING
    assert response.json == "{}"


def test_rays_startup_failure_is_said_to_be_rays() -> None:
    failure = ray_client_pb2.DataResponse(
        req_id=4,
        init=ray_client_pb2.InitResponse(
            ok=False, msg="Traceback ...\nRuntimeError: Starting Ray client server failed. See x"
        ),
    ).SerializeToString()
    parsed = ray_client_pb2.DataResponse()
    parsed.ParseFromString(explain_ray_startup_failure(failure))
    assert parsed.req_id == 4
    assert not parsed.init.ok
    assert parsed.init.msg.startswith(RAY_STARTUP_NOTE)
    assert parsed.init.msg.endswith("Starting Ray client server failed. See x")


@pytest.mark.parametrize(
    "response",
    [
        ray_client_pb2.DataResponse(req_id=1, init=ray_client_pb2.InitResponse(ok=True)),
        ray_client_pb2.DataResponse(
            req_id=1, init=ray_client_pb2.InitResponse(ok=False, msg="another failure")
        ),
        ray_client_pb2.DataResponse(req_id=2, get=ray_client_pb2.GetResponse(valid=True)),
    ],
)
def test_other_messages_pass_unchanged(response: object) -> None:
    data = response.SerializeToString()  # type: ignore[attr-defined]
    assert explain_ray_startup_failure(data) == data


def test_what_is_not_a_data_response_is_left_alone() -> None:
    assert init_response(b"\xff\xff\xff") is None
    assert explain_ray_startup_failure(b"\xff\xff\xff") == b"\xff\xff\xff"
