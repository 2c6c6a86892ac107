"""YAML configuration files and the one loader that validates them.

Every config is a pydantic model that lives next to the code that reads it; this module only
finds the YAML, applies ``--set key=value`` overrides and turns validation errors into one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent
T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or override is unreadable or invalid; the message is one line a user can act on."""


def default_config_path(name: str) -> Path:
    """Path of the shipped default config ``configs/<name>.yaml``."""
    return CONFIG_DIR / f"{name}.yaml"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed YAML value)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {item!r}: expected key=value, for example --set model.num_loops=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad override {item!r}: value is not valid YAML ({exc.problem})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.path=value`` override set."""
    data = _deep_copy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"bad override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(
    model: type[T],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    default: str | None = None,
) -> T:
    """Read ``path`` (or the shipped ``configs/<default>.yaml``), apply overrides, validate with ``model``.

    Unknown keys are errors (models should set ``extra="forbid"``); every error is a ConfigError
    whose message names the key and the problem in one line.
    """
    source = Path(path) if path is not None else (default_config_path(default) if default else None)
    data: dict[str, Any] = {}
    if source is not None:
        try:
            loaded = yaml.safe_load(source.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {source}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {source} is not valid YAML: {exc}".replace("\n", " ")) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {source} must hold a mapping at the top level")
        data = loaded or {}
    data = apply_overrides(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source)) from None


def _one_line(exc: ValidationError, source: Path | None) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        got = f" (got {err['input']!r})" if err["type"] not in ("extra_forbidden", "missing") else ""
        parts.append(f"{key}: {msg}{got}")
    where = f" in {source}" if source else ""
    return f"invalid config{where}: " + "; ".join(parts)


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
