"""Dataclass configs from YAML files and `key=value` command-line overrides.

A package's config is a dataclass whose fields are values or nested dataclasses (sections):

    cfg = load_config(Config, "ivgt/configs/tiny.yaml", ["train.steps=50", "lr=3e-4"])

An override names a field by its dotted path (`train.steps`) or, where it is unique, by its
name alone (`lr`); its value is read with YAML syntax. A key that is not a field, in the file or
on the command line, is an error naming the file and the key (with the closest field names), so
a typo never passes silently; so is a value of another type than the field's default.

Values of the right type that cannot work (`train.checkpoint_every=0`, a negative learning rate)
are checked by each package's `check_config` with `check_min`, whose message names the dotted key:

    check_min(cfg, ["train.steps", "train.checkpoint_every"], 1)  # train.steps: expected an int >= 1, got -5
    check_min(cfg, ["train.lr"], 0, strict=True)  # train.lr: expected a number > 0, got 0.0
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's dataclasses."""


# Keys that left the configs, by name (any section), and where the setting is now. Checked only
# for keys that are not fields, so a config that still has such a field is unaffected.
MOVED = {
    "cpu_threads": "the --threads N flag of the command (default: torch's default, all cores)",
    "threads": "the --threads N flag of the command (default: torch's default, all cores)",
}


def load_config(cls: type[T], path=None, overrides: Iterable[str] = ()) -> T:
    """`cls()` updated by the YAML file at `path` (if given), then by `overrides`."""
    cfg = cls()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        update_config(cfg, data, str(path))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        dotted = resolve_key(cfg, key.strip(), f"override {item!r}")
        update_config(cfg, _nest(dotted, yaml.safe_load(text)), f"override {item!r}")
    return cfg


def update_config(cfg, data: dict, where: str, prefix: str = "") -> None:
    """Set the fields of dataclass `cfg` from the (nested) mapping `data`, checking every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            if key in MOVED:
                raise ConfigError(f"{where}: key {dotted!r} is no longer a config setting; use {MOVED[key]}")
            close = difflib.get_close_matches(str(key), fields, n=3)
            hint = f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""
            raise ConfigError(f"{where}: unknown key {dotted!r}{hint} (fields: {sorted(fields)})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            update_config(current, value, where, dotted + ".")
        else:
            setattr(cfg, key, _checked(current, value, where, dotted))


def resolve_key(cfg, key: str, where: str) -> str:
    """The dotted path of `key`: itself if it is one, else the unique field of that name."""
    paths = list(_leaf_paths(cfg))
    if key in paths or any(p.startswith(key + ".") for p in paths):
        return key
    owners = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(owners) == 1:
        return owners[0]
    if owners:
        raise ConfigError(f"{where}: {key!r} is ambiguous; write one of {owners}")
    if key.rsplit(".", 1)[-1] in MOVED:
        raise ConfigError(f"{where}: key {key!r} is no longer a config setting; use {MOVED[key.rsplit('.', 1)[-1]]}")
    leaves = {p.rsplit(".", 1)[-1]: p for p in paths}
    close = difflib.get_close_matches(key, paths, n=3) or [leaves[c] for c in difflib.get_close_matches(key, leaves, n=3)]
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def get_key(cfg, dotted: str):
    """The value at a dotted path (`train.stage1.steps`) of a nested dataclass config."""
    value = cfg
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(value) or not hasattr(value, part):
            raise KeyError(f"config has no field {dotted!r}")
        value = getattr(value, part)
    return value


def check_min(cfg, keys: Iterable[str], minimum: float, strict: bool = False) -> None:
    """Each dotted key must hold a finite number >= `minimum` (> `minimum` when `strict`); None
    passes (an optional field left unset). Otherwise a ConfigError naming the key, the expected
    range and the value: `train.checkpoint_every: expected an int >= 1, got 0`."""
    for key in keys:
        value = get_key(cfg, key)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and math.isfinite(value) and (value > minimum if strict else value >= minimum):
            continue
        kind = "an int" if isinstance(value, int) and not isinstance(value, bool) else "a number"
        raise ConfigError(f"{key}: expected {kind} {'>' if strict else '>='} {minimum:g}, got {value!r}")


def config_to_dict(cfg) -> dict:
    """Plain nested dict (tuples become lists) for YAML/JSON."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def _checked(current, value, where: str, dotted: str):
    if current is None or value is None:
        return value
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, bool) != isinstance(value, bool) or not isinstance(value, type(current)):
        raise ConfigError(f"{where}: key {dotted!r} expects {type(current).__name__}, got {value!r}")
    return value


def _leaf_paths(cfg, prefix: str = ""):
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaf_paths(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def _nest(dotted: str, value: Any) -> dict:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
