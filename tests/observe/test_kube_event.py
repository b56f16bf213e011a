"""`--audit-format kubernetes`: each line is an `audit.k8s.io/v1` Event as kube-apiserver's log
backend writes it. The schema below is written from the upstream type definitions
(k8s.io/apiserver/pkg/apis/audit/v1/types.go, authentication/v1 UserInfo, meta/v1 Status)."""

from __future__ import annotations

import io
import json
from datetime import datetime

import jsonschema
import pytest

from raygate.identity import Attributes, Identity, service_account_identity
from raygate.observe.audit import AuditFormat, AuditLog, AuditRecord

MICRO_TIME = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"
USER_INFO = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "username": {"type": "string"},
        "uid": {"type": "string"},
        "groups": {"type": "array", "items": {"type": "string"}},
        "extra": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}
STATUS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "kind": {"type": "string"},
        "apiVersion": {"type": "string"},
        "metadata": {"type": "object"},
        "status": {"enum": ["Success", "Failure"]},
        "message": {"type": "string"},
        "reason": {"type": "string"},
        "details": {"type": "object"},
        "code": {"type": "integer"},
    },
}
OBJECT_REFERENCE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        name: {"type": "string"}
        for name in (
            "resource",
            "namespace",
            "name",
            "uid",
            "apiGroup",
            "apiVersion",
            "resourceVersion",
            "subresource",
        )
    },
}
EVENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "apiVersion", "level", "auditID", "stage", "requestURI", "verb", "user"],
    "properties": {
        "kind": {"const": "Event"},
        "apiVersion": {"const": "audit.k8s.io/v1"},
        "level": {"enum": ["None", "Metadata", "Request", "RequestResponse"]},
        "auditID": {"type": "string", "minLength": 1},
        "stage": {"enum": ["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]},
        "requestURI": {"type": "string"},
        "verb": {"type": "string"},
        "user": USER_INFO,
        "impersonatedUser": USER_INFO,
        "sourceIPs": {"type": "array", "items": {"type": "string"}},
        "userAgent": {"type": "string"},
        "objectRef": OBJECT_REFERENCE,
        "responseStatus": STATUS,
        "requestObject": {"type": "object"},
        "responseObject": {"type": "object"},
        "requestReceivedTimestamp": {"type": "string", "pattern": MICRO_TIME},
        "stageTimestamp": {"type": "string", "pattern": MICRO_TIME},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def events_for(*records: AuditRecord) -> list[dict]:
    stream = io.StringIO()
    audit = AuditLog(stream=stream, format=AuditFormat.KUBERNETES)
    for rec in records:
        audit.write(rec)
    audit.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(records)
    return [json.loads(line) for line in lines]


def resource_record(decision: str, status: int, reason: str) -> AuditRecord:
    identity = service_account_identity("default", "ray-user", "0a1b")
    rec = AuditRecord(
        request_id="f00d",
        method="POST",
        path="/api/jobs/?x=1",
        remote="127.0.0.1",
        user_agent="ray/2.60.0",
    )
    rec.identity = identity
    rec.attributes = [
        Attributes(
            identity=identity,
            verb="create",
            namespace="default",
            api_group="ray.io",
            resource="rayclusters",
            subresource="jobs",
            name="ray-cluster-with-auth",
        )
    ]
    rec.decision, rec.status, rec.reason = decision, status, reason  # type: ignore[assignment]
    return rec


def test_allowed_request_is_a_valid_metadata_event_with_kube_apiservers_annotations() -> None:
    (event,) = events_for(resource_record("allow", 200, 'RBAC: allowed by RoleBinding "x"'))
    jsonschema.validate(event, EVENT)
    assert event["level"] == "Metadata" and event["stage"] == "ResponseComplete"
    assert event["verb"] == "create" and event["requestURI"] == "/api/jobs/?x=1"
    assert event["user"] == {
        "username": "system:serviceaccount:default:ray-user",
        "uid": "0a1b",
        "groups": [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated",
        ],
    }
    assert event["objectRef"] == {
        "resource": "rayclusters",
        "namespace": "default",
        "name": "ray-cluster-with-auth",
        "apiGroup": "ray.io",
        "subresource": "jobs",
    }
    assert event["responseStatus"] == {"metadata": {}, "code": 200}
    assert event["sourceIPs"] == ["127.0.0.1"] and event["userAgent"] == "ray/2.60.0"
    assert event["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert event["annotations"]["authorization.k8s.io/reason"] == 'RBAC: allowed by RoleBinding "x"'
    received = datetime.fromisoformat(event["requestReceivedTimestamp"])
    assert received <= datetime.fromisoformat(event["stageTimestamp"])


def test_denied_request_is_forbid_with_a_failure_status() -> None:
    (event,) = events_for(resource_record("deny", 403, ""))
    jsonschema.validate(event, EVENT)
    assert event["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert event["responseStatus"]["code"] == 403
    assert event["responseStatus"]["status"] == "Failure"
    assert event["responseStatus"]["reason"] == "Forbidden"


@pytest.mark.parametrize("status", [401, 503])
def test_unauthenticated_and_unavailable_requests_have_no_user_and_no_authz_decision(
    status: int,
) -> None:
    rec = AuditRecord(request_id="b0b", method="GET", path="/api/version", remote=None)
    rec.decision = "unauthenticated" if status == 401 else "unavailable"  # type: ignore[assignment]
    rec.status, rec.reason = status, "no bearer token"
    (event,) = events_for(rec)
    jsonschema.validate(event, EVENT)
    assert event["user"] == {} and event["verb"] == "get"
    assert "authorization.k8s.io/decision" not in event["annotations"]
    assert event["annotations"]["raygate.io/decision"] == rec.decision
    assert "sourceIPs" not in event and "objectRef" not in event


def test_non_resource_request_has_no_object_ref_and_keeps_the_users_extra() -> None:
    identity = Identity("alice", "u1", ("devs",), {"scopes": ("a", "b")})
    rec = AuditRecord(request_id="c0c", method="GET", path="/healthz", remote="::1")
    rec.identity = identity
    rec.attributes = [
        Attributes(identity=identity, verb="get", resource_request=False, path="/healthz")
    ]
    rec.decision, rec.status = "allow", 200  # type: ignore[assignment]
    (event,) = events_for(rec)
    jsonschema.validate(event, EVENT)
    assert "objectRef" not in event
    assert event["user"]["extra"] == {"scopes": ["a", "b"]}
