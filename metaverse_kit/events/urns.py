"""Build and parse DataHub URNs, with DataHub's rules for reserved characters.

A URN looks like ``urn:li:<entityType>:<id>`` or, for keys with several parts,
``urn:li:<entityType>:(<part>,<part>,...)``, where a part may itself be a URN
(``urn:li:dataset:(urn:li:dataPlatform:hive,db.table,PROD)``).

Reserved characters: ``,``, ``(``, ``)`` and ``␟`` (U+241F) cannot appear in a name, because they
would break the tuple syntax. Like DataHub's ``UrnEncoder``, the builders percent-encode exactly
these characters (``,`` becomes ``%2C``, ``(`` ``%28``, ``)`` ``%29``, ``␟`` ``%E2%90%9F``) and
leave everything else alone, ``%`` included. Because ``%`` itself is not encoded, a name that
literally contains ``%2C`` cannot be told apart from one that contained ``,``:
:func:`decode_urn_part` turns both into ``,``. The URN strings themselves always round-trip.

Builders accept a plain name or an already-built URN of the same type (returned unchanged) and
raise :class:`InvalidUrnError` for anything else; parsers raise :class:`InvalidUrnError` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from metaverse_kit.errors import MetaverseError

__all__ = [
    "DEFAULT_ENV",
    "FABRIC_TYPES",
    "RESERVED_CHARS",
    "SNAPSHOT_NAMES",
    "DatasetUrn",
    "InvalidUrnError",
    "Urn",
    "decode_urn_part",
    "encode_urn_part",
    "entity_type_of",
    "fabric_type",
    "make_data_platform_urn",
    "make_dataset_urn",
    "make_glossary_node_urn",
    "make_group_urn",
    "make_tag_urn",
    "make_term_urn",
    "make_user_urn",
    "parse_dataset_urn",
    "parse_urn",
    "snapshot_for_urn",
]


class InvalidUrnError(MetaverseError, ValueError):
    """A string is not a valid URN, or not a URN of the kind that was expected."""


#: Characters DataHub percent-encodes in the names inside a URN (``UrnEncoder.RESERVED_CHARS``).
RESERVED_CHARS = frozenset({",", "(", ")", "␟"})

#: The symbols of DataHub's ``com.linkedin.pegasus2avro.common.FabricType`` enum, in its order.
FABRIC_TYPES = (
    "DEV",
    "TEST",
    "QA",
    "UAT",
    "EI",
    "PRE",
    "STG",
    "NON_PROD",
    "PROD",
    "CORP",
    "RVW",
    "PRD",
    "TST",
    "SIT",
    "SBX",
    "SANDBOX",
    "CERT",
)

DEFAULT_ENV = "PROD"

_SNAPSHOT_NS = "com.linkedin.pegasus2avro.metadata.snapshot."

#: Entity type -> full name of the snapshot record the built-in MCE schema has for it.
SNAPSHOT_NAMES = {
    "dataset": _SNAPSHOT_NS + "DatasetSnapshot",
    "corpuser": _SNAPSHOT_NS + "CorpUserSnapshot",
    "corpGroup": _SNAPSHOT_NS + "CorpGroupSnapshot",
    "tag": _SNAPSHOT_NS + "TagSnapshot",
    "glossaryTerm": _SNAPSHOT_NS + "GlossaryTermSnapshot",
}

_PREFIX = "urn:li:"
_ENCODED = {c: quote(c) for c in RESERVED_CHARS}
_DECODE = re.compile("|".join(re.escape(v) for v in _ENCODED.values()), re.IGNORECASE)
_DECODED = {v.upper(): k for k, v in _ENCODED.items()}


@dataclass(frozen=True)
class Urn:
    """A parsed URN: its entity type and the parts of its key, as written (still encoded).

    Nested URNs stay strings: ``parse_urn("urn:li:dataset:(urn:li:dataPlatform:hive,t,PROD)")``
    has ``parts == ("urn:li:dataPlatform:hive", "t", "PROD")``.
    """

    entity_type: str
    parts: tuple[str, ...]

    @property
    def urn(self) -> str:
        """The URN string again, exactly as DataHub writes it."""
        if len(self.parts) == 1:
            return f"{_PREFIX}{self.entity_type}:{self.parts[0]}"
        return f"{_PREFIX}{self.entity_type}:({','.join(self.parts)})"

    def __str__(self) -> str:
        return self.urn


@dataclass(frozen=True)
class DatasetUrn:
    """A parsed dataset URN, with the names decoded back to what the user typed.

    ``platform`` is the platform's short name (``"hive"``), ``env`` a FabricType symbol.
    """

    platform: str
    name: str
    env: str

    @property
    def platform_urn(self) -> str:
        """The platform as a URN, ``urn:li:dataPlatform:<platform>``."""
        return make_data_platform_urn(self.platform)

    @property
    def urn(self) -> str:
        """The dataset URN string again."""
        return make_dataset_urn(self.platform, self.name, self.env)

    def __str__(self) -> str:
        return self.urn


def encode_urn_part(value: str) -> str:
    """Percent-encode DataHub's reserved characters (``,()␟``) in one name; nothing else changes."""
    if not RESERVED_CHARS.intersection(value):
        return value
    return "".join(_ENCODED.get(c, c) for c in value)


def decode_urn_part(value: str) -> str:
    """Undo :func:`encode_urn_part`: turn ``%2C``, ``%28``, ``%29``, ``%E2%90%9F`` back into text.

    Other ``%`` sequences are left alone, as DataHub never encodes them.
    """
    if "%" not in value:
        return value
    return _DECODE.sub(lambda m: _DECODED[m.group(0).upper()], value)


def _split_key(key: str, urn: str) -> tuple[str, ...]:
    # Commas split the tuple only at depth 1, so nested URNs keep their own parentheses.
    if not (key.startswith("(") and key.endswith(")")):
        if RESERVED_CHARS.intersection(key):
            raise InvalidUrnError(
                f"Invalid URN {urn!r}: the key {key!r} contains a reserved character "
                f"(one of , ( ) ␟); encode names with the make_*_urn builders."
            )
        return (key,)
    parts: list[str] = []
    depth = 0
    start = 1
    for i, c in enumerate(key):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0 or (depth == 0 and i != len(key) - 1):
                raise InvalidUrnError(f"Invalid URN {urn!r}: its parentheses do not match.")
        elif c == "," and depth == 1:
            parts.append(key[start:i])
            start = i + 1
    if depth != 0:
        raise InvalidUrnError(f"Invalid URN {urn!r}: its parentheses do not match.")
    parts.append(key[start:-1])
    if any(not p for p in parts):
        raise InvalidUrnError(f"Invalid URN {urn!r}: one of the parts in its key is empty.")
    return tuple(parts)


def parse_urn(urn: str) -> Urn:
    """Split a URN into its entity type and key parts (nested URNs kept as strings).

    Raises :class:`InvalidUrnError` when ``urn`` does not start with ``urn:li:``, has no entity
    type or key, has empty key parts, or unbalanced parentheses.
    """
    if not isinstance(urn, str):
        raise InvalidUrnError(f"A URN must be a string, got {type(urn).__name__} {urn!r}.")
    if not urn.startswith(_PREFIX):
        hint = " (remove the surrounding spaces)" if urn.strip().startswith(_PREFIX) else ""
        raise InvalidUrnError(
            f"Invalid URN {urn!r}: a URN starts with 'urn:li:', like 'urn:li:corpuser:jdoe'{hint}."
        )
    entity_type, sep, key = urn[len(_PREFIX) :].partition(":")
    if not entity_type or not sep or not key:
        raise InvalidUrnError(
            f"Invalid URN {urn!r}: expected 'urn:li:<entityType>:<key>', "
            f"like 'urn:li:corpuser:jdoe'."
        )
    return Urn(entity_type, _split_key(key, urn))


def entity_type_of(urn: str) -> str:
    """Return the entity type of a URN: ``"dataset"``, ``"corpuser"``, ``"corpGroup"``, ...

    Raises :class:`InvalidUrnError` when ``urn`` is not a URN.
    """
    return parse_urn(urn).entity_type


def snapshot_for_urn(urn: str) -> str:
    """Return the full name of the MCE snapshot record for the URN's entity type.

    Raises :class:`InvalidUrnError` when ``urn`` is not a URN, or is one of an entity type the
    built-in MCE schema has no snapshot for (the message lists the supported types).
    """
    entity_type = entity_type_of(urn)
    try:
        return SNAPSHOT_NAMES[entity_type]
    except KeyError:
        raise InvalidUrnError(
            f"The MetadataChangeEvent schema has no snapshot for {entity_type!r} entities "
            f"({urn!r}); supported entity types: {', '.join(SNAPSHOT_NAMES)}."
        ) from None


def _single(value: str, entity_type: str, what: str, example: str) -> str:
    """Build ``urn:li:<entity_type>:<name>``, or check and return an URN of that type."""
    if not isinstance(value, str):
        raise InvalidUrnError(f"A {what} must be a string, got {type(value).__name__} {value!r}.")
    if value.startswith(_PREFIX):
        parsed = parse_urn(value)
        if parsed.entity_type != entity_type:
            raise InvalidUrnError(
                f"Expected a {what} or an 'urn:li:{entity_type}:...' URN, got a "
                f"{parsed.entity_type!r} URN: {value!r}."
            )
        if len(parsed.parts) != 1:
            raise InvalidUrnError(
                f"Invalid {entity_type} URN {value!r}: its key has one part, like {example!r}."
            )
        return parsed.urn
    if not value:
        raise InvalidUrnError(f"A {what} cannot be empty.")
    return f"{_PREFIX}{entity_type}:{encode_urn_part(value)}"


def make_data_platform_urn(platform: str) -> str:
    """Return ``urn:li:dataPlatform:<platform>``; a platform URN is returned unchanged."""
    return _single(platform, "dataPlatform", "platform name", "urn:li:dataPlatform:hive")


def fabric_type(env: str) -> str:
    """The FabricType symbol of ``env`` (DataHub upper-cases it: ``"prod"`` is ``PROD``).

    Raises :class:`InvalidUrnError` naming the symbols when it is none of them.
    """
    value = env.upper() if isinstance(env, str) else env
    if value not in FABRIC_TYPES:
        raise InvalidUrnError(
            f"{env!r} is not a DataHub environment (FabricType); use one of "
            f"{', '.join(FABRIC_TYPES)}."
        )
    return value


def make_dataset_urn(platform: str, name: str, env: str = DEFAULT_ENV) -> str:
    """Return ``urn:li:dataset:(urn:li:dataPlatform:<platform>,<name>,<ENV>)``.

    ``platform`` may be a short name or a platform URN; reserved characters in ``name`` are
    encoded; ``env`` is upper-cased and must be one of :data:`FABRIC_TYPES`. Raises
    :class:`InvalidUrnError` otherwise.
    """
    platform_urn = make_data_platform_urn(platform)
    if not isinstance(name, str) or not name:
        raise InvalidUrnError(f"A dataset name must be a non-empty string, got {name!r}.")
    return f"{_PREFIX}dataset:({platform_urn},{encode_urn_part(name)},{fabric_type(env)})"


def make_user_urn(username: str) -> str:
    """Return ``urn:li:corpuser:<username>``; a corpuser URN is returned unchanged.

    Unlike DataHub's ``make_user_urn``, a group URN is refused (use :func:`make_group_urn`).
    """
    return _single(username, "corpuser", "user name", "urn:li:corpuser:jdoe")


def make_group_urn(group: str) -> str:
    """Return ``urn:li:corpGroup:<group>``; a corpGroup URN is returned unchanged."""
    return _single(group, "corpGroup", "group name", "urn:li:corpGroup:data-stewards")


def make_tag_urn(tag: str) -> str:
    """Return ``urn:li:tag:<tag>``; a tag URN is returned unchanged."""
    return _single(tag, "tag", "tag name", "urn:li:tag:pii")


def make_term_urn(term: str) -> str:
    """Return ``urn:li:glossaryTerm:<term>``; a glossaryTerm URN is returned unchanged.

    Reserved characters are encoded, as DataHub's ``GlossaryTermUrn`` does (its older
    ``mce_builder.make_term_urn`` does not encode them).
    """
    return _single(
        term, "glossaryTerm", "glossary term name", "urn:li:glossaryTerm:Finance.Revenue"
    )


def make_glossary_node_urn(node: str) -> str:
    """Return ``urn:li:glossaryNode:<node>``; a glossaryNode URN is returned unchanged."""
    return _single(node, "glossaryNode", "glossary node name", "urn:li:glossaryNode:Finance")


def parse_dataset_urn(urn: str) -> DatasetUrn:
    """Parse a dataset URN into its platform name, dataset name (decoded) and environment.

    Raises :class:`InvalidUrnError` when ``urn`` is not a dataset URN with three parts, its
    platform is not a platform URN, or its environment is not a FabricType symbol.
    """
    parsed = parse_urn(urn)
    if parsed.entity_type != "dataset":
        raise InvalidUrnError(
            f"Expected a dataset URN ('urn:li:dataset:(...)'), got a {parsed.entity_type!r} URN: "
            f"{urn!r}."
        )
    if len(parsed.parts) != 3:
        raise InvalidUrnError(
            f"Invalid dataset URN {urn!r}: expected three parts (platform, name, env), like "
            f"'urn:li:dataset:(urn:li:dataPlatform:hive,db.table,PROD)'; got {len(parsed.parts)}."
        )
    platform, name, env = parsed.parts
    try:
        platform_parts = parse_urn(platform)
    except InvalidUrnError:
        platform_parts = Urn("", ())
    if platform_parts.entity_type != "dataPlatform" or len(platform_parts.parts) != 1:
        raise InvalidUrnError(
            f"Invalid dataset URN {urn!r}: its first part must be a platform URN like "
            f"'urn:li:dataPlatform:hive', got {platform!r}."
        )
    if env not in FABRIC_TYPES:
        raise InvalidUrnError(
            f"Invalid dataset URN {urn!r}: {env!r} is not a DataHub environment (FabricType); "
            f"use one of {', '.join(FABRIC_TYPES)}."
        )
    return DatasetUrn(decode_urn_part(platform_parts.parts[0]), decode_urn_part(name), env)
