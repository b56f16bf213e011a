"""The Kubernetes objects the embedded authority stores, validated like the API server would.

`parse_object(doc)` turns one decoded manifest document into a typed object or raises
`ManifestError` naming the kind, the object and the offending field.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from raygate.errors import ManifestError

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API_VERSION = f"{RBAC_GROUP}/v1"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_dns_subdomain(value: str, what: str) -> str:
    if not value or len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid name: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters"
        )
    return value


def check_namespace_name(value: str) -> str:
    if not value or len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            f"namespace {value!r} is not a valid name: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


# RBAC object names follow path-segment rules in Kubernetes (they may contain ':'),
# so roles like `system:auth-delegator` stay valid.
def _check_path_segment(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value or "%" in value or len(value) > 253:
        raise ValueError(
            f"{what} {value!r} is not a valid name: may not be empty, '.', '..' "
            "or contain '/' or '%'"
        )
    return value


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _label_key_problem(key: str) -> str | None:
    """Why `key` is not a qualified name (`[dns-prefix/]name`), as Kubernetes checks label
    keys; None when it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: the part before '/' must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            f"label key {key!r}: the name must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def _label_value_problem(value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return (
            f"label value {value!r}: must be empty or at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        )
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ObjectMeta(BaseModel):
    # Unknown metadata fields (managedFields, finalizers...) are tolerated, as kubectl apply does.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")

    @field_validator("namespace")
    @classmethod
    def _namespace_ok(cls, v: str | None) -> str | None:
        return None if v is None else check_namespace_name(v)


class PolicyRule(_Model):
    verbs: list[str] = Field(min_length=1)
    api_groups: list[str] = Field(default_factory=list, alias="apiGroups")
    resources: list[str] = Field(default_factory=list)
    resource_names: list[str] = Field(default_factory=list, alias="resourceNames")
    non_resource_urls: list[str] = Field(default_factory=list, alias="nonResourceURLs")

    @model_validator(mode="after")
    def _rule_shape(self) -> PolicyRule:
        # Kubernetes' rule validation: a rule names resources or non-resource URLs, not both.
        if self.non_resource_urls and (self.resources or self.api_groups):
            raise ValueError("a rule may not mix nonResourceURLs with apiGroups/resources")
        if not self.non_resource_urls and not self.resources:
            raise ValueError("a rule must name resources (with apiGroups) or nonResourceURLs")
        if self.resources and not self.api_groups:
            raise ValueError(
                'a rule with resources must name apiGroups (use "" for the core group)'
            )
        return self


class LabelSelectorRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(_Model):
    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions"
    )


class AggregationRule(_Model):
    cluster_role_selectors: list[LabelSelector] = Field(
        default_factory=list, alias="clusterRoleSelectors"
    )


class RoleRef(_Model):
    api_group: Literal["rbac.authorization.k8s.io"] = Field(alias="apiGroup")
    kind: Literal["Role", "ClusterRole"]
    name: str


class Subject(_Model):
    kind: Literal["User", "Group", "ServiceAccount"]
    name: str = Field(min_length=1)
    namespace: str | None = None
    api_group: str | None = Field(default=None, alias="apiGroup")

    @model_validator(mode="after")
    def _subject_shape(self) -> Subject:
        if self.kind == "ServiceAccount" and self.api_group not in (None, ""):
            raise ValueError('a ServiceAccount subject has apiGroup "" (or none)')
        if self.kind in ("User", "Group") and self.api_group not in (None, RBAC_GROUP):
            raise ValueError(f'a {self.kind} subject has apiGroup "{RBAC_GROUP}"')
        return self


class _Object(_Model):
    api_version: str = Field(alias="apiVersion")
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace


class ObjectReference(_Model):
    """core/v1 ObjectReference, as Kubernetes' schema has it (unknown fields are refused)."""

    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_version: str | None = Field(default=None, alias="apiVersion")
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    field_path: str | None = Field(default=None, alias="fieldPath")


class LocalObjectReference(_Model):
    """core/v1 LocalObjectReference: a name in the object's own namespace, nothing else."""

    name: str | None = None


class ServiceAccount(_Object):
    kind: Literal["ServiceAccount"]
    api_version: Literal["v1"] = Field(alias="apiVersion")
    secrets: list[ObjectReference] = Field(default_factory=list)
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, alias="imagePullSecrets"
    )
    automount_service_account_token: bool | None = Field(
        default=None, alias="automountServiceAccountToken"
    )


_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


class Secret(_Object):
    """core/v1 Secret. In raygate its use is to bind long-lived tokens (`raygate create token
    --bound-object-kind Secret`): deleting the Secret revokes them. `stringData` is folded into
    `data` (base64) as the API server does on write."""

    kind: Literal["Secret"]
    api_version: Literal["v1"] = Field(alias="apiVersion")
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] | None = Field(default=None, alias="stringData")
    immutable: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _fold_string_data(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("stringData"), dict):
            value = dict(value)
            data = dict(value.get("data") or {})
            for key, text in value.pop("stringData").items():
                if isinstance(text, str):
                    data[key] = base64.b64encode(text.encode()).decode()
                else:
                    data[key] = text
            value["data"] = data
        return value

    @field_validator("data")
    @classmethod
    def _data_ok(cls, data: dict[str, str]) -> dict[str, str]:
        for key, encoded in data.items():
            if not _SECRET_KEY.match(key) or len(key) > 253:
                raise ValueError(
                    f"{key!r}: a valid config key must consist of alphanumeric characters, "
                    "'-', '_' or '.'"
                )
            try:
                base64.b64decode(encoded, validate=True)
            except (ValueError, TypeError):
                raise ValueError(f"{key}: illegal base64 data") from None
        return data


class Role(_Object):
    kind: Literal["Role"]
    api_version: Literal["rbac.authorization.k8s.io/v1"] = Field(alias="apiVersion")
    rules: list[PolicyRule] = Field(default_factory=list)


class ClusterRole(_Object):
    kind: Literal["ClusterRole"]
    api_version: Literal["rbac.authorization.k8s.io/v1"] = Field(alias="apiVersion")
    rules: list[PolicyRule] = Field(default_factory=list)
    aggregation_rule: AggregationRule | None = Field(default=None, alias="aggregationRule")


class RoleBinding(_Object):
    kind: Literal["RoleBinding"]
    api_version: Literal["rbac.authorization.k8s.io/v1"] = Field(alias="apiVersion")
    role_ref: RoleRef = Field(alias="roleRef")
    subjects: list[Subject] = Field(default_factory=list)


class ClusterRoleBinding(_Object):
    kind: Literal["ClusterRoleBinding"]
    api_version: Literal["rbac.authorization.k8s.io/v1"] = Field(alias="apiVersion")
    role_ref: RoleRef = Field(alias="roleRef")
    subjects: list[Subject] = Field(default_factory=list)

    @model_validator(mode="after")
    def _subjects_namespaced(self) -> ClusterRoleBinding:
        # In a RoleBinding a ServiceAccount subject defaults to the binding's namespace;
        # a ClusterRoleBinding has none to lend, so Kubernetes requires it.
        for i, subject in enumerate(self.subjects):
            if subject.kind == "ServiceAccount" and not subject.namespace:
                raise ValueError(f"subjects[{i}].namespace: required for a ServiceAccount subject")
        return self


KubeObject = Annotated[
    ServiceAccount | Secret | Role | ClusterRole | RoleBinding | ClusterRoleBinding,
    Field(discriminator="kind"),
]

MODELS: dict[str, type[_Object]] = {
    "ServiceAccount": ServiceAccount,
    "Secret": Secret,
    "Role": Role,
    "ClusterRole": ClusterRole,
    "RoleBinding": RoleBinding,
    "ClusterRoleBinding": ClusterRoleBinding,
}
NAMESPACED_KINDS = frozenset({"ServiceAccount", "Secret", "Role", "RoleBinding"})

# kubectl-style names for `get KIND`: plural, singular, short names, kind itself, kind.group.
KIND_ALIASES: dict[str, str] = {}
for _kind, _aliases in {
    "ServiceAccount": ("serviceaccounts", "serviceaccount", "sa"),
    "Secret": ("secrets", "secret"),
    "Role": ("roles", "role", f"roles.{RBAC_GROUP}", f"role.{RBAC_GROUP}"),
    "ClusterRole": ("clusterroles", "clusterrole", f"clusterroles.{RBAC_GROUP}"),
    "RoleBinding": ("rolebindings", "rolebinding", f"rolebindings.{RBAC_GROUP}"),
    "ClusterRoleBinding": (
        "clusterrolebindings",
        "clusterrolebinding",
        f"clusterrolebindings.{RBAC_GROUP}",
    ),
}.items():
    KIND_ALIASES[_kind.lower()] = _kind
    for _alias in _aliases:
        KIND_ALIASES[_alias] = _kind


def resolve_kind(text: str) -> str:
    """`sa`, `roles`, `Role`, `roles.rbac.authorization.k8s.io` -> the Kind; ConfigError-free."""
    kind = KIND_ALIASES.get(text.lower())
    if kind is None:
        known = ", ".join(sorted(k.lower() + "s" for k in MODELS))
        raise ManifestError(f'the server doesn\'t have a resource type "{text}" (known: {known})')
    return kind


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in MODELS:  # the discriminator's tag, not a field
            continue
        else:
            path += ("." if path else "") + str(part)
    return _one_line(path) or "(document)"


def _one_line(text: str) -> str:
    """User-supplied text quoted in a message, kept to one line (errors are one line)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def describe_document(doc: Any, index: int | None = None, source: str | None = None) -> str:
    where = []
    if source:
        where.append(source)
    if index is not None:
        where.append(f"document {index + 1}")
    label = ""
    if isinstance(doc, dict):
        kind = doc.get("kind") or "?"
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        name = meta.get("name") or "?"
        label = _one_line(f"{kind} {name!s}")
    prefix = " ".join(where)
    return f"{prefix} ({label})" if prefix and label else prefix or label or "document"


def _rule_problems(rule: PolicyRule, path: str, namespaced: bool) -> Iterator[str]:
    # kube-apiserver's ValidatePolicyRule; the schema above already checks the rest.
    if rule.non_resource_urls:
        if namespaced:
            yield (
                f"{path}.nonResourceURLs: namespaced rules cannot apply to non-resource URLs "
                "(grant them in a ClusterRole)"
            )
        if rule.resource_names:
            yield (
                f"{path}.nonResourceURLs: rules cannot apply to both regular resources and "
                "non-resource URLs (resourceNames is set)"
            )


def _selector_problems(selector: LabelSelector, path: str) -> Iterator[str]:
    # ValidateLabelSelector: keys and values as labels, values as each operator needs them.
    for key, value in selector.match_labels.items():
        for problem in (_label_key_problem(key), _label_value_problem(value)):
            if problem:
                yield f"{path}.matchLabels: {problem}"
    for i, requirement in enumerate(selector.match_expressions):
        where = f"{path}.matchExpressions[{i}]"
        problem = _label_key_problem(requirement.key)
        if problem:
            yield f"{where}.key: {problem}"
        if requirement.operator in ("In", "NotIn") and not requirement.values:
            yield f"{where}.values: must be specified when `operator` is 'In' or 'NotIn'"
        if requirement.operator in ("Exists", "DoesNotExist") and requirement.values:
            yield (
                f"{where}.values: may not be specified when `operator` is 'Exists' or "
                "'DoesNotExist'"
            )
        for value in requirement.values:
            problem = _label_value_problem(value)
            if problem:
                yield f"{where}.values: {problem}"


def _binding_problems(obj: RoleBinding | ClusterRoleBinding) -> Iterator[str]:
    # ValidateRoleBinding / ValidateClusterRoleBinding / ValidateRoleBindingSubject.
    if isinstance(obj, ClusterRoleBinding) and obj.role_ref.kind != "ClusterRole":
        yield (
            "roleRef.kind: a ClusterRoleBinding can only refer to a ClusterRole, "
            f'not "{obj.role_ref.kind}"'
        )
    try:
        _check_path_segment(obj.role_ref.name, "name")
    except ValueError as err:
        yield f"roleRef.name: {err}"
    for i, subject in enumerate(obj.subjects):
        if subject.kind == "ServiceAccount":
            try:
                _check_dns_subdomain(subject.name, "ServiceAccount name")
            except ValueError as err:
                yield f"subjects[{i}].name: {err}"


def object_problems(obj: _Object) -> list[str]:
    """What kube-apiserver's create/update validation (pkg/apis/rbac/validation, ObjectMeta
    labels) refuses beyond the schema the models enforce, each as "field.path: message".

    Kept apart from the models so that objects stored before a rule existed still load; every
    new or changed manifest goes through it (`parse_object`).
    """
    problems: list[str] = []
    for key, value in obj.metadata.labels.items():
        for problem in (_label_key_problem(key), _label_value_problem(value)):
            if problem:
                problems.append(f"metadata.labels: {problem}")
    if isinstance(obj, Role | ClusterRole):
        namespaced = isinstance(obj, Role)
        for i, rule in enumerate(obj.rules):
            problems.extend(_rule_problems(rule, f"rules[{i}]", namespaced))
    if isinstance(obj, ClusterRole) and obj.aggregation_rule is not None:
        selectors = obj.aggregation_rule.cluster_role_selectors
        if not selectors:
            problems.append(
                "aggregationRule.clusterRoleSelectors: at least one clusterRoleSelector "
                "required if aggregationRule is set"
            )
        for i, selector in enumerate(selectors):
            where = f"aggregationRule.clusterRoleSelectors[{i}]"
            problems.extend(_selector_problems(selector, where))
    if isinstance(obj, RoleBinding | ClusterRoleBinding):
        problems.extend(_binding_problems(obj))
    return problems


def parse_object(doc: Any, index: int | None = None, source: str | None = None) -> _Object:
    """Validate one manifest document. Raises ManifestError with document and field named."""
    what = describe_document(doc, index, source)
    if not isinstance(doc, dict):
        raise ManifestError(f"{what}: expected a mapping (an object), got {type(doc).__name__}")
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(f"{what}: field kind: required")
    if kind == "List":
        raise ManifestError(f"{what}: kind List must be expanded before parsing")
    model = MODELS.get(kind)
    if model is None:
        known = ", ".join(MODELS)
        raise ManifestError(
            f'{what}: field kind: unknown kind "{_one_line(kind)}" (supported: {known})'
        )
    try:
        obj = model.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        field = _field_path(tuple(first["loc"]))
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            msg = "required"
        elif first["type"] == "extra_forbidden":
            msg = "unknown field"
        extra = f" (and {err.error_count() - 1} more errors)" if err.error_count() > 1 else ""
        raise ManifestError(f"{what}: field {field}: {msg}{extra}") from None
    except ValueError as err:
        raise ManifestError(f"{what}: {err}") from None
    try:
        if kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
            _check_path_segment(obj.metadata.name, "metadata.name")
        else:
            _check_dns_subdomain(obj.metadata.name, "metadata.name")
    except ValueError as err:
        raise ManifestError(f"{what}: field {err}") from None
    problems = object_problems(obj)
    if problems:
        extra = f" (and {len(problems) - 1} more errors)" if len(problems) > 1 else ""
        raise ManifestError(f"{what}: field {_one_line(problems[0])}{extra}")
    if kind not in NAMESPACED_KINDS and obj.metadata.namespace:
        # The API server ignores namespace on cluster-scoped objects; so do we, silently.
        obj = obj.model_copy(
            update={"metadata": obj.metadata.model_copy(update={"namespace": None})}
        )
    return obj


def with_namespace(obj: _Object, namespace: str) -> _Object:
    """Fill in the namespace of a namespaced object that named none (like `kubectl apply -n`)."""
    if obj.kind not in NAMESPACED_KINDS or obj.metadata.namespace:  # type: ignore[attr-defined]
        return obj
    return obj.model_copy(
        update={"metadata": obj.metadata.model_copy(update={"namespace": namespace})}
    )


def to_manifest(obj: _Object) -> dict[str, Any]:
    """The object as Kubernetes would print it (camelCase, no empty defaults)."""
    return obj.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False, mode="json")
