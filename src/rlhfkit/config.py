"""Dataclass configs that double as command-line interfaces.

A config is a dataclass with a docstring under each field (the house style); that docstring is
the ``--help`` text. ``--config FILE.yaml`` loads values, flags given on the command line override
them. Field ``foo_bar`` becomes flag ``--foo-bar``; booleans become ``--flag/--no-flag``.

Example::

    @dataclass
    class Config:
        lr: float = 1e-5
        \"\"\"Peak learning rate.\"\"\"

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Config)
    cfg = config_from_args(Config, parser.parse_args(["--lr", "3e-5"]))
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlhfkit.errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """A config file or value is wrong; the message names the file and field."""


def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass ``cls`` (and its bases) to the docstring written under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _resolve(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_value(tp: Any, raw: Any, where: str) -> Any:
    base, optional = _base_type(tp)
    if raw is None or (optional and isinstance(raw, str) and raw.lower() in ("none", "null")):
        return None
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(raw, str) and raw.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if base in (int, float):
            if isinstance(raw, bool):
                raise ValueError(f"expected a number, got {raw!r}")
            value = base(raw)
            if base is int and isinstance(raw, float) and raw != int(raw):
                raise ValueError(f"expected an integer, got {raw!r}")
            return value
        if base is str:
            if not isinstance(raw, (str, int, float)):
                raise ValueError(f"expected a string, got {type(raw).__name__}")
            return str(raw)
        if base is Path:
            return Path(raw)
        if origin in (list, tuple):
            (inner,) = typing.get_args(base)[:1] or (str,)
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, (list, tuple)):
                raise ValueError(f"expected a list, got {type(raw).__name__}")
            return [_parse_value(inner, x, where) for x in items]
        if origin is typing.Literal:
            choices = typing.get_args(base)
            if raw not in choices:
                raise ValueError(f"expected one of {', '.join(map(str, choices))}, got {raw!r}")
            return raw
        if origin is dict or base is dict:
            if not isinstance(raw, dict):
                raise ValueError(f"expected a mapping, got {type(raw).__name__}")
            return raw
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return raw


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip=()) -> None:
    """Add one flag per field of ``cls`` (help = the field's docstring) and ``--config``."""
    docs = field_docs(cls)
    hints = _resolve(cls)
    parser.add_argument(
        "--config", type=Path, default=None, help="YAML file of field values; flags override it."
    )
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        help_text = docs.get(f.name, "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        help_text += " (required)" if required else f" (default: {default})"
        base, _ = _base_type(hints[f.name])
        if base is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag, dest=f.name, default=None, help=help_text, metavar=f.name.upper()
            )


def config_from_args(cls: type[T], args: argparse.Namespace | dict) -> T:
    """Build ``cls`` from defaults, then ``--config`` YAML, then explicit flags."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    merged: dict[str, Any] = {}
    config_path = values.get("config")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if config_path:
        merged.update(load_yaml_config(cls, Path(config_path)))
    for name in names:
        if values.get(name) is not None:
            merged[name] = values[name]
    return build_config(cls, merged, where="command line")


def load_yaml_config(cls: type, path: Path) -> dict[str, Any]:
    """Read a YAML mapping of field values for ``cls``; unknown keys are an error."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        loc = f"{path}:{line + 1}" if line is not None else str(path)
        raise ConfigError(f"{loc}: not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ConfigError(
                f"{path}: unknown field {key!r}; expected one of {', '.join(sorted(names))}"
            )
        out[name] = value
    return {"__file__": str(path), **out}


def build_config(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Type-check and convert ``values`` into ``cls``; errors name the field."""
    hints = _resolve(cls)
    source = values.pop("__file__", where)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            kwargs[f.name] = _parse_value(
                hints[f.name], values[f.name], f"{source}: field {f.name}"
            )
    try:
        cfg = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain (YAML-safe) dict of a config dataclass."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else v
    return out
