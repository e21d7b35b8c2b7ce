"""Trainer configs checked whole before anything runs: one schema, typed by the defaults.

A trainer's defaults dict (``DEFAULTS`` in each ``loopexpose/methods/<method>/train.py``) *is* its schema: every
key has its default's type (a bool key takes true/false, an int key integers, a float key any number, a string
key strings, a list key a list of its default's element type, a table a table), so a key added to the defaults
is checked with no other edit. A key whose values need more than a type (choices, a range, the element type of
an empty list) adds a :class:`Rule` to the trainer's ``RULES`` beside its defaults; checks across keys
(a schedule of at least one epoch, ``window = [lo, hi]`` in order, ...) follow the per-key ones. So write a
default in the type its values take: ``1.0``, not ``1``, for a weight that may be ``0.5``; a default of ``None``
takes any value.

Every problem is one :class:`~loopexpose.errors.LoopExposeError` line naming the key:

>>> check_config({"lr": "0.01"}, {"lr": 2e-3}, {})
Traceback (most recent call last):
...
loopexpose.errors.LoopExposeError: config key lr must be a number, got the string '0.01'
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any

from loopexpose.errors import LoopExposeError


@dataclass(frozen=True)
class Rule:
    """What a key's value must be beyond its default's type. ``minimum``/``maximum`` and ``choices`` apply to
    each element of a list; ``type`` replaces the type derived from the default (``list[str]`` for ``[]``)."""

    type: Any = None
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # minimum excluded (> instead of >=)
    below: bool = False  # maximum excluded
    length: int | None = None  # lists of exactly this many values
    nonempty: bool = False  # strings and lists


def check_dataclass(values, config_class: type, key: str, path: object | None = None) -> dict:
    """``values`` (a dict, or ``None`` for all defaults) checked against a settings dataclass: known names, each
    of its default's type (fields without a default take any value). Returns a checked copy."""
    if values is None:
        return {}
    assert is_dataclass(config_class)
    defaults = {}
    for f in fields(config_class):
        factory = f.default_factory
        defaults[f.name] = f.default if f.default is not MISSING else factory() if factory is not MISSING else None
    free = tuple(f"{key}.{name}" for name, default in defaults.items() if default is None or isinstance(default, dict))
    checked = check_config(values, defaults, {}, path, prefix=f"{key}.", free=free)
    return {name: tuple(v) if isinstance(defaults[name], tuple) else v for name, v in checked.items()}


# --------------------------------------------------------------------------------------------- the engine


def check_config(
    config: dict,
    defaults: dict,
    rules: dict[str, Rule],
    path: object | None = None,
    prefix: str = "",
    free: tuple[str, ...] = (),
) -> dict:
    """A checked copy of ``config`` against the schema ``defaults`` (+ ``rules``); keys missing from ``config``
    are not added. ``free`` names tables taken as they are (checked elsewhere)."""
    if not isinstance(config, dict):
        _fail(prefix.rstrip(".") or "config", f"must be a table, got {_describe(config)}", path)
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key not in defaults:
            _fail(name, "is not a known key (a typo?)", path, unknown=True)
        default, rule = defaults[key], rules.get(name, Rule())
        if name in free and default is None:  # no default to type it by
            out[key] = value
        elif name in free:
            if value is not None and not isinstance(value, dict):
                _fail(name, f"must be a table, got {_describe(value)}", path)
            out[key] = dict(value or {})
        elif isinstance(default, dict) and rule.type is None:
            out[key] = check_config(value, default, rules, path, f"{name}.", free)
        else:
            out[key] = check_value(name, value, rule.type or type_of(default), rule, path)
    return out


def type_of(default) -> Any:
    """The type a default stands for: ``2e-3`` -> ``float``, ``["a"]`` -> ``list[str]``, ``[]`` -> ``list``,
    ``None`` -> ``object`` (any value; a :class:`Rule` may type it)."""
    if default is None:
        return object
    if isinstance(default, (list, tuple)):
        return list[type_of(default[0])] if default else list
    if isinstance(default, dict):
        return dict
    return type(default)


def check_value(name: str, value, expected, rule: Rule = Rule(), path: object | None = None):
    """``value`` of key ``name`` checked against type ``expected`` and ``rule``; returns it (ints given for floats
    become floats)."""
    element = None
    if getattr(expected, "__origin__", None) is list:
        expected, element = list, expected.__args__[0]
    value = _typed(name, value, expected, path)
    if expected is list:
        if element is not None:
            value = [_typed(f"{name}[{i}]", v, element, path) for i, v in enumerate(value)]
        if rule.length is not None and len(value) != rule.length:
            _fail(name, f"must hold {rule.length} values, got {len(value)}: {value}", path)
    if rule.nonempty and not value:
        _fail(name, "must not be empty", path)
    for item in value if expected is list else [value]:
        if rule.choices and item not in rule.choices:
            _fail(name, f"must be one of {', '.join(map(repr, rule.choices))}; got {item!r}", path)
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if rule.minimum is not None and (item <= rule.minimum if rule.above else item < rule.minimum):
                _fail(name, f"must be {'>' if rule.above else '>='} {rule.minimum:g}, got {item!r}", path)
            if rule.maximum is not None and (item >= rule.maximum if rule.below else item > rule.maximum):
                _fail(name, f"must be {'<' if rule.below else '<='} {rule.maximum:g}, got {item!r}", path)
    return value


TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
              dict: "a table"}  # fmt: skip


def _typed(name: str, value, expected, path):
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list and isinstance(value, tuple):  # configs built in Python
        return list(value)
    if expected in (int, float) and isinstance(value, bool) or not isinstance(value, expected):
        _fail(name, f"must be {TYPE_WORDS.get(expected, expected.__name__)}, got {_describe(value)}", path)
    if expected is float and not math.isfinite(value):
        _fail(name, f"must be a finite number, got {value}", path)
    return list(value) if expected is list else value


def _describe(value) -> str:
    words = {bool: "the boolean", int: "the integer", float: "the number", str: "the string", list: "the list",
             tuple: "the list", dict: "a table"}  # fmt: skip
    word = words.get(type(value), f"a {type(value).__name__}")
    if isinstance(value, dict):
        return word
    text = repr(value)
    return f"{word} {text if len(text) <= 60 else text[:57] + '...'}"


def _fail(name: str, problem: str, path: object | None, unknown: bool = False):
    message = f"unknown config key {name!r}" if unknown else f"config key {name} {problem}"
    raise LoopExposeError(message, path)
