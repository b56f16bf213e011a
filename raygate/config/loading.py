"""Loading raygate's YAML (`raygate serve --config FILE`, `raygate up`'s settings) and turning
validation errors into one line that names the file (or flag) and the field, e.g.
`gateway.yaml: authorization.resourceAttributes.nmespace: unknown field`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raygate.config.model import GatewayConfig
from raygate.errors import ConfigError


def _field_path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")):
            continue  # pydantic's internal validator names, not a field the user wrote
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


_MESSAGE_REWRITES = (
    ("Extra inputs are not permitted", "unknown field"),
    ("Field required", "required"),
    ("Value error, ", ""),
    ("Assertion failed, ", ""),
)


def describe_validation_error(
    err: ValidationError, rename: Callable[[str], str] | None = None
) -> str:
    """One line for all errors in `err`: `field.path: message; other.field: message`."""
    parts: list[str] = []
    for item in err.errors(include_url=False):
        message = item["msg"]
        for old, new in _MESSAGE_REWRITES:
            message = message.replace(old, new)
        field = _field_path(item["loc"])
        parts.append(f"{rename(field) if rename else field}: {message}")
    return "; ".join(parts)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot parse"
        raise ConfigError(f"{path}: {where}not valid YAML: {problem}") from None


def config_from_mapping(data: Any, source: str = "<config>") -> GatewayConfig:
    """Validate an already-parsed raygate config; errors name `source` and the field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err)}") from None


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """raygate's own YAML (`raygate serve --config FILE`)."""
    return config_from_mapping(read_yaml(path), str(path))


def dump_config(config: GatewayConfig) -> dict[str, Any]:
    """The config as raygate YAML would spell it (camelCase, defaults left out)."""
    return config.model_dump(mode="json", by_alias=True, exclude_defaults=True)
