"""``--key value`` overrides for any config dataclass, and reading a stage config from JSON.

Values are converted with the field's annotation (int, float, bool, str, Optional[...], list/dict via JSON); an unknown
key is an error that names it and lists the valid keys. Dashes and underscores are interchangeable
(``--max-steps 10`` = ``--max_steps 10``); ``--flag`` alone sets a bool field to True.

>>> from dataclasses import dataclass
>>> @dataclass
... class C:
...     lr: float = 1e-3
...     steps: int = 10
...     name: str | None = None
...     compile: bool = False
>>> apply_overrides(C(), ["--lr", "3e-4", "--max_steps", "5"])
Traceback (most recent call last):
...
r1lab.config_cli.OverrideError: unknown option --max_steps for C; valid: --compile, --lr, --name, --steps
>>> apply_overrides(C(), ["--lr", "3e-4", "--steps=5", "--compile"])
C(lr=0.0003, steps=5, name=None, compile=True)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class OverrideError(ValueError):
    """A bad ``--key value`` override; the message names the key."""


def _convert(value: str, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        for a in args:
            try:
                return _convert(value, a, key)
            except OverrideError:
                continue
        raise OverrideError(f"--{key}: cannot read {value!r} as {annotation}")
    if annotation is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise OverrideError(f"--{key}: expected true/false, got {value!r}")
    if annotation in (int, float):
        try:
            return annotation(float(value)) if annotation is int and "e" in value.lower() else annotation(value)
        except ValueError:
            raise OverrideError(f"--{key}: expected {annotation.__name__}, got {value!r}") from None
    if annotation is str or annotation is Any:
        return value
    if origin in (list, dict, tuple) or annotation in (list, dict):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            if origin is list:
                return [x for x in value.split(",") if x]
            raise OverrideError(f"--{key}: expected JSON, got {value!r}") from None
    return value


def apply_overrides(config: T, argv: list[str]) -> T:
    """Return a copy of the dataclass ``config`` with ``--key value`` pairs from ``argv`` applied."""
    hints = typing.get_type_hints(type(config))
    fields = {f.name: f for f in dataclasses.fields(config) if f.init}
    changes: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise OverrideError(f"expected --key value, got {token!r}")
        key, _, inline = token[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            valid = ", ".join(f"--{k}" for k in sorted(fields))
            raise OverrideError(f"unknown option --{key} for {type(config).__name__}; valid: {valid}")
        if inline:
            raw = inline
        elif hints[key] is bool and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            raw = "true"
        else:
            if i + 1 >= len(argv):
                raise OverrideError(f"--{key} needs a value")
            raw = argv[i + 1]
            i += 1
        changes[key] = _convert(raw, hints[key], key)
        i += 1
    return dataclasses.replace(config, **changes)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults, then a JSON file's keys (unknown key → error with the file name), then ``--key value`` overrides."""
    config = cls()
    if path:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise OverrideError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OverrideError(f"{path}: unknown keys {unknown} for {cls.__name__}")
        config = dataclasses.replace(config, **data)
    return apply_overrides(config, overrides or [])


def describe(cls: type) -> str:
    """One line per field: name, default and the docstring that follows it in the source (for --help)."""
    import ast
    import inspect

    doc: dict[str, str] = {}
    try:
        tree = ast.parse(inspect.getsource(cls))
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                doc[node.target.id] = " ".join(str(nxt.value.value).split())
    except (OSError, TypeError, SyntaxError, IndexError):
        pass
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        lines.append(f"  --{f.name.replace('_', '-')} (default {default!r}): {doc.get(f.name, '')}")
    return "\n".join(lines)
