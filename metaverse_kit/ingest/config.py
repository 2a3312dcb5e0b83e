"""Source configs: dataclasses read from a recipe, with errors that name the key.

A source declares its config as a dataclass; each field's ``metadata["help"]`` says what it is
for (the :class:`~metaverse_kit.widgets.IngestionRunner` form shows it). :func:`parse_config`
turns the ``config`` mapping of a recipe into an instance, checking every key: an unknown key
(with the closest known one), a missing required key and a value of the wrong type are reported
all at once, each with its path (``source.config.url``).

Field types understood: ``str``, ``int``, ``float``, ``bool``, ``list[str]``,
``dict[str, str]``, ``Literal[...]`` and any of them ``| None``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from metaverse_kit.errors import ConfigurationError
from metaverse_kit.events.urns import InvalidUrnError, fabric_type, make_data_platform_urn

__all__ = ["ConfigField", "RecipeError", "config_fields", "parse_config"]


class RecipeError(ConfigurationError):
    """A recipe or a source config is wrong; ``problems`` lists each problem with its key path."""

    def __init__(self, problems: list[str], *, what: str = "recipe") -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"The {what} has {count} problem{'s' if count != 1 else ''}:\n{lines}")


@dataclass(frozen=True)
class ConfigField:
    """One key of a source config, as a form or a help text shows it."""

    name: str
    kind: str  #: ``str``, ``int``, ``float``, ``bool``, ``list``, ``dict`` or ``choice``
    required: bool
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    optional: bool = False  #: None is allowed


def _kind(annotation: Any) -> tuple[str, tuple[Any, ...], bool]:
    """(kind, choices, whether None is allowed) of a field's type annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"unsupported config type {annotation!r}")
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "choice", typing.get_args(annotation), optional
    if origin is list:
        return "list", (), optional
    if origin is dict:
        return "dict", (), optional
    if annotation in (str, int, float, bool):
        return annotation.__name__, (), optional
    raise TypeError(f"unsupported config type {annotation!r}")


def config_fields(config_class: type) -> list[ConfigField]:
    """The keys of a config dataclass, in declaration order.

    Raises :class:`TypeError` when ``config_class`` is not a dataclass or has a field of a type
    this module cannot read (a source author's mistake, not a user's).
    """
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"{config_class!r} is not a dataclass")
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        kind, choices, optional = _kind(hints[f.name])
        factory: Any = f.default_factory
        required = f.default is dataclasses.MISSING and factory is dataclasses.MISSING
        default: Any = None
        if not required:
            default = f.default if f.default is not dataclasses.MISSING else factory()
        out.append(
            ConfigField(
                f.name, kind, required, default, str(f.metadata.get("help", "")), choices, optional
            )
        )
    return out


_NAMES = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false"}


def _check(field: ConfigField, value: Any, path: str, problems: list[str]) -> Any:
    if value is None:
        if field.optional:
            return None
        problems.append(f"{path}: must not be empty (null)")
        return None
    kind = field.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "choice":
        if value in field.choices:
            return value
        problems.append(
            f"{path}: expected one of {', '.join(map(repr, field.choices))}, got {value!r}"
        )
        return None
    elif kind == "list":
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        problems.append(f"{path}: expected a list of text, got {value!r}")
        return None
    elif kind == "dict":
        if isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return dict(value)
        problems.append(f"{path}: expected a mapping of text to text, got {value!r}")
        return None
    problems.append(f"{path}: expected {_NAMES[kind]}, got {value!r}")
    return None


#: Config keys (DataHub's names) whose values go into URNs, and the check of each.
_URN_PARTS: dict[str, Callable[[str], str]] = {
    "env": fabric_type,
    "platform": make_data_platform_urn,
}


def parse_config(
    config_class: type, data: Mapping[str, Any] | None, *, where: str = "source.config"
) -> Any:
    """An instance of ``config_class`` from the mapping ``data`` (a recipe's ``config``).

    Raises :class:`RecipeError` listing every unknown key (with the closest known one), every
    missing required key, every value of the wrong type and an ``env`` or ``platform`` that
    cannot be part of a URN, each with its path under ``where``.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError([f"{where}: expected a mapping of keys to values, got {data!r}"])
    fields = {f.name: f for f in config_fields(config_class)}
    problems: list[str] = []
    for key in data:
        if key not in fields:
            # NOTE: difflib compares case: "URL" had no suggestion, beside "url: required".
            close = [f for f in fields if f.lower() == str(key).lower()]
            close = close or difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where}.{key}: unknown key{hint} (known keys: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        if name not in data:
            if field.required:
                help_text = f" ({field.help})" if field.help else ""
                problems.append(f"{where}.{name}: required{help_text}")
            continue
        values[name] = _check(field, data[name], f"{where}.{name}", problems)
        # NOTE: DataHub's conventional keys become part of every URN a source makes: checked
        # here, a wrong one is a config error naming it, not a failure in the middle of a run.
        if name in _URN_PARTS and isinstance(values[name], str) and values[name]:
            try:
                _URN_PARTS[name](values[name])
            except InvalidUrnError as exc:
                problems.append(f"{where}.{name}: {exc}")
    if problems:
        raise RecipeError(problems, what="source config" if where.endswith("config") else where)
    return config_class(**values)
