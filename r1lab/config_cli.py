"""``--key value`` overrides for any config dataclass, and reading a stage config from JSON.

Values are converted with the field's annotation (int, float, bool, str, Optional[...], list/dict via JSON) and checked
against it, on the command line and in a ``--config`` JSON file alike: a value of the wrong type is an error naming the
field, the value and the expected type. A list field takes a JSON list (``--phases [256,512]``,
``--corpus '["a.jsonl","b.txt"]'``) or comma-separated items (``--phases 256,512``, ``--corpus a.jsonl,b.txt``); a list
of strings also takes one bare item (``--corpus a.jsonl``). An unknown key is an error that names it and lists the
valid keys. Dashes and underscores are interchangeable
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class OverrideError(ValueError):
    """A bad ``--key value`` override or config-file value; the message names the key."""


def type_name(annotation: Any) -> str:
    """``list[str]``, ``int``, ``str | None``: an annotation as a user reads it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _bad(where: str, value: Any, annotation: Any, hint: str = "") -> OverrideError:
    """The error for a value that does not fit its field: names the field, the value and the expected type."""
    got = f"{value!r} ({type(value).__name__})"
    return OverrideError(f"{where}: expected {type_name(annotation)}, got {got}{hint}")


def check_value(value: Any, annotation: Any, where: str, strict: bool = False) -> Any:
    """``value`` (already a Python/JSON value) checked against a field annotation and lightly coerced (int → float,
    an integral float → int, a bare string → a one-element ``list[str]``); anything else → ``OverrideError`` naming
    ``where`` (e.g. ``--corpus`` or ``cfg.json: field 'corpus'``), the value and the expected type.

    ``strict=True`` (recipes and presets, whose values are recorded as given): no coercion — an int is still a float,
    but an integral float is not an int and a string is not a list; the value comes back unchanged.

    >>> check_value(3, float, "--lr"), check_value("a.txt", list[str], "--corpus"), check_value(2.0, int, "--steps")
    (3.0, ['a.txt'], 2)
    >>> check_value(2.0, int, "steps", strict=True)
    Traceback (most recent call last):
    ...
    r1lab.config_cli.OverrideError: steps: expected int, got 2.0 (float) (write 2, not 2.0)
    """
    origin = typing.get_origin(annotation)
    if annotation is Any or annotation is object:
        return value
    if annotation is None or annotation is type(None):
        if value is None:
            return None
        raise _bad(where, value, annotation)
    if _is_union(annotation):
        for a in typing.get_args(annotation):
            try:
                return check_value(value, a, where, strict)
            except OverrideError:
                continue
        raise _bad(where, value, annotation)
    if origin is typing.Literal:
        if value in typing.get_args(annotation):
            return value
        raise _bad(where, value, annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _bad(where, value, annotation)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            if strict:
                raise _bad(where, value, annotation, f" (write {int(value)}, not {value!r})")
            return int(value)
        raise _bad(where, value, annotation)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value if strict else float(value)
        raise _bad(where, value, annotation)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _bad(where, value, annotation)
    container = origin or annotation
    if container in (list, tuple, Sequence):
        args = typing.get_args(annotation)
        if isinstance(value, str) and not strict and container is list and args == (str,):
            return [value]  # one file name for a list of file names
        if not isinstance(value, (list, tuple)) or (container is list and isinstance(value, tuple) and not strict):
            cli = where.startswith("--")
            raise _bad(where, value, annotation, " (write a JSON list like [1,2]" + (" or comma-separated 1,2)" if cli
                                                                                   else ")"))
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _bad(where, value, annotation)
            items = [check_value(v, a, f"{where}[{i}]", strict) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else Any
            items = [check_value(v, item, f"{where}[{i}]", strict) for i, v in enumerate(value)]
        if strict:
            return value
        return tuple(items) if container is tuple else items
    if container in (dict, Mapping):
        key_t, val_t = typing.get_args(annotation) or (Any, Any)
        if not isinstance(value, Mapping):
            raise _bad(where, value, annotation, ' (write a JSON object like {"key": 1})')
        checked = {check_value(k, key_t, where, strict): check_value(v, val_t, f"{where}[{k!r}]", strict)
                   for k, v in value.items()}
        return value if strict else checked
    if isinstance(annotation, type) and origin is None and not isinstance(value, annotation):
        raise _bad(where, value, annotation)
    return value


def _parse_scalar(value: str, annotation: Any, key: str) -> Any:
    """A command-line string as a bool / int / float / str, by the annotation."""
    if annotation is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise OverrideError(f"--{key}: expected true/false, got {value!r}")
    if annotation is int:
        try:
            number = float(value) if "e" in value.lower() or "." in value else int(value)
        except ValueError:
            raise OverrideError(f"--{key}: expected int, got {value!r}") from None
        return check_value(number, int, f"--{key}")
    if annotation is float:
        try:
            return float(value)
        except ValueError:
            raise OverrideError(f"--{key}: expected float, got {value!r}") from None
    return value


def _parse_list(value: str, annotation: Any, key: str) -> list:
    """A command-line list: JSON (``[256,512]``, ``'["a.jsonl","b.txt"]'``; for a list of strings also one JSON
    string), else comma-separated (``256,512``, ``a.jsonl,b.txt``, or one bare ``a.jsonl``). A value that is valid
    JSON but not a list (``256`` for a list) is an error, not a guess."""
    (item,) = typing.get_args(annotation) or (Any,)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        if value.strip().startswith("["):
            raise OverrideError(f"--{key}: invalid JSON list {value!r}; expected {type_name(annotation)}") from None
    else:
        return check_value(parsed, annotation, f"--{key}")
    parts = [x.strip() for x in value.split(",")]
    if not all(parts):
        raise OverrideError(f"--{key}: empty item in {value!r}; expected {type_name(annotation)}")
    if item in (int, float, bool):
        return [_parse_scalar(x, item, f"{key}[{i}]") for i, x in enumerate(parts)]
    return check_value(parts, annotation, f"--{key}")


def _convert(value: str, annotation: Any, key: str) -> Any:
    """A command-line string converted by the field's annotation; a value that does not fit → ``OverrideError``."""
    origin = typing.get_origin(annotation)
    if _is_union(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value.lower() in ("none", "null") and type(None) in typing.get_args(annotation):
            return None
        for a in args:
            try:
                return _convert(value, a, key)
            except OverrideError:
                continue
        raise OverrideError(f"--{key}: cannot read {value!r} as {type_name(annotation)}")
    if annotation in (bool, int, float):
        return _parse_scalar(value, annotation, key)
    if annotation is str or annotation is Any:
        return value
    if origin is list or annotation is list:
        return _parse_list(value, annotation, key)
    if origin in (dict, tuple) or annotation in (dict, tuple) or origin is typing.Literal:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            if origin is typing.Literal:
                return check_value(value, annotation, f"--{key}")
            raise OverrideError(f"--{key}: expected JSON {type_name(annotation)}, got {value!r}") from None
        return check_value(parsed, annotation, f"--{key}")
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
        if not isinstance(data, dict):
            raise OverrideError(f"{path}: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OverrideError(f"{path}: unknown keys {unknown} for {cls.__name__}")
        hints = typing.get_type_hints(cls)
        data = {k: check_value(v, hints[k], f"{path}: field {k!r}") for k, v in data.items()}
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
