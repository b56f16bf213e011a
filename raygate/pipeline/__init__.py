"""The decision pipeline: from a request head to "forward as this identity" or "answer this".

Transport-independent: the HTTP data plane (raygate.dataplane), WebSocket upgrades and the Ray
Client and Serve doors all call `Pipeline.decide`. See docs/design.md.
"""

from raygate.observe.audit import AuditDecision, AuditRecord
from raygate.pipeline.authority import Authority, CombinedAuthority
from raygate.pipeline.decide import (
    MAX_TOKEN_BYTES,
    AuthHeaders,
    DecisionMemo,
    Pipeline,
    PipelineSettings,
    UpstreamCalls,
)
from raygate.pipeline.head import Door, Headers, RequestHead
from raygate.pipeline.outcome import Answer, BufferedResponse, Forward, HeaderList
from raygate.pipeline.profiles import AttributesProfile, HookContext, Profile, profile_for

__all__ = [
    "MAX_TOKEN_BYTES",
    "Answer",
    "AttributesProfile",
    "AuditDecision",
    "AuditRecord",
    "AuthHeaders",
    "Authority",
    "BufferedResponse",
    "CombinedAuthority",
    "DecisionMemo",
    "Door",
    "Forward",
    "HeaderList",
    "Headers",
    "HookContext",
    "Pipeline",
    "PipelineSettings",
    "Profile",
    "RequestHead",
    "UpstreamCalls",
    "profile_for",
]
