"""Audit records as Kubernetes audit events (`audit.k8s.io/v1` `Event`, level Metadata), laid
out as kube-apiserver's log backend writes them, so tools that read its audit log read ours.

Field by field as in k8s.io/apiserver/pkg/apis/audit/v1/types.go; the authorization decision
goes into the annotations kube-apiserver's authorization filter sets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raygate.observe.audit import AuditRecord

API_VERSION = "audit.k8s.io/v1"
DECISION_ANNOTATION = "authorization.k8s.io/decision"
REASON_ANNOTATION = "authorization.k8s.io/reason"
RAYGATE_DECISION_ANNOTATION = "raygate.io/decision"

# metav1.StatusReason for the codes the gateway answers.
_STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def micro_time(timestamp: float) -> str:
    """metav1.MicroTime: RFC 3339 with microseconds, UTC."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _response_status(code: int) -> dict[str, Any]:
    # Successful responses carry only the code (and empty metadata), as kube-apiserver writes.
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if code >= 400:
        status["status"] = "Failure"
        status["reason"] = _STATUS_REASONS.get(code, "InternalError" if code >= 500 else "")
        if not status["reason"]:
            del status["reason"]
    return status


def kubernetes_event(record: AuditRecord, received: float, completed: float) -> dict[str, Any]:
    """The Event for one decision; `received`/`completed` are wall-clock seconds."""
    identity = record.identity
    user: dict[str, Any] = {}
    if identity is not None:
        user["username"] = identity.user
        if identity.uid:
            user["uid"] = identity.uid
        if identity.groups:
            user["groups"] = list(identity.groups)
        if identity.extra:
            user["extra"] = {key: list(values) for key, values in identity.extra.items()}
    attributes = record.attributes[0] if record.attributes else None
    verb = attributes.verb if attributes is not None else record.method.lower()
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": API_VERSION,
        "level": "Metadata",
        "auditID": record.request_id,
        "stage": "ResponseComplete",
        "requestURI": record.path,
        "verb": verb,
        "user": user,
    }
    if record.remote:
        event["sourceIPs"] = [record.remote]
    if record.user_agent:
        event["userAgent"] = record.user_agent
    if attributes is not None and attributes.resource_request:
        ref = {
            "resource": attributes.resource,
            "namespace": attributes.namespace,
            "name": attributes.name,
            "apiGroup": attributes.api_group,
            "apiVersion": attributes.api_version,
            "subresource": attributes.subresource,
        }
        event["objectRef"] = {key: value for key, value in ref.items() if value}
    event["responseStatus"] = _response_status(record.status)
    event["requestReceivedTimestamp"] = micro_time(received)
    event["stageTimestamp"] = micro_time(completed)
    annotations = {RAYGATE_DECISION_ANNOTATION: str(record.decision)}
    if str(record.decision) in ("allow", "deny"):
        annotations[DECISION_ANNOTATION] = "allow" if str(record.decision) == "allow" else "forbid"
        annotations[REASON_ANNOTATION] = record.reason
    elif record.reason:
        annotations["raygate.io/reason"] = record.reason
    event["annotations"] = annotations
    return event
