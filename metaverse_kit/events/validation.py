"""Check a record against its Avro schema, reporting every problem with its field path.

Records are plain data in the form fastavro reads and writes. A union's record branch is named by
a ``("full.Name", {...})`` tuple, which is what ``fastavro.schemaless_reader(...,
return_record_name=True)`` returns. A plain dict in a union is accepted only when exactly one
branch can hold all of its fields; the check then settles the branch, so that what is written
is never re-guessed by the encoder (fastavro would otherwise pick the first branch whose fields
fit and may drop data).

A value of a logical type must also be one its readers can hold: a timestamp, date or time a
Python datetime holds (years 1 to 9999; a time of day), a uuid in RFC 4122's text form, a
decimal with no more digits than its precision (see
:func:`~metaverse_kit.events.avro.logical_problem`). A ``float`` or ``double`` takes finite
numbers of its range only: NaN, infinity, and a number it would write as another are refused,
never altered (see :func:`~metaverse_kit.events.avro.number_problem`); a missing value is
None, in a field that takes null.
"""

from __future__ import annotations

from typing import Any

from metaverse_kit.errors import FieldProblem, ValidationError
from metaverse_kit.events import semantics
from metaverse_kit.events.avro import (
    AvroSchema,
    dict_branches,
    logical_problem,
    number_problem,
    whole_number_text,
)

__all__ = ["check_type", "normalize", "validate"]

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_MAX_LISTED = 8


def validate(record: Any, schema: AvroSchema | str | dict) -> list[FieldProblem]:
    """Return every problem that stops ``record`` from being written with ``schema``.

    An empty list means the record is valid. Paths look like
    ``proposedSnapshot.aspects[1].owners[0].type``. Besides the Avro types, strings must be
    text and URN fields URNs of their entity type (see :mod:`metaverse_kit.events.semantics`).
    """
    avro = AvroSchema.of(schema)
    problems: list[FieldProblem] = []
    out = _Checker(avro, problems).value(record, avro.root, "")
    return problems + semantics.problems(out, avro)


def normalize(record: Any, schema: AvroSchema | str | dict, *, what: str = "record") -> Any:
    """Return ``record`` with every union branch made explicit, ready for the encoder.

    Raises :class:`ValidationError` listing every problem when the record does not fit.
    """
    avro = AvroSchema.of(schema)
    problems: list[FieldProblem] = []
    out = _Checker(avro, problems).value(record, avro.root, "")
    problems += semantics.problems(out, avro)
    if problems:
        raise ValidationError(problems, what=what)
    return out


def check_type(avro: AvroSchema, value: Any, t: Any = None) -> tuple[Any, list[FieldProblem]]:
    """Check ``value`` against the Avro type ``t`` of ``avro`` (default: its root) by Avro's
    rules alone (no URN semantics): the value with its union branches made explicit, and
    every problem (empty when it fits). For forms and JSON previews, which ask of one branch
    at a time whether a value fits it."""
    problems: list[FieldProblem] = []
    out = _Checker(avro, problems).value(value, avro.root if t is None else t, "")
    return out, problems


def _short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return whole_number_text(value)
    try:
        text = repr(value)
    except ValueError:
        # NOTE: repr() of a list holding an int of more digits than Python converts raises.
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


class _Checker:
    def __init__(self, avro: AvroSchema, problems: list[FieldProblem]) -> None:
        self.avro = avro
        self.problems = problems

    def fail(self, path: str, message: str) -> None:
        self.problems.append(FieldProblem(path, message))

    def value(self, v: Any, t: Any, path: str) -> Any:
        t = self.avro.resolve(t)
        if isinstance(t, list):
            return self.union(v, t, path)
        kind = t if isinstance(t, str) else t["type"]
        if kind in ("record", "error"):
            return self.record(v, t, path)
        if kind == "enum":
            if not isinstance(v, str):
                self.fail(path, f"expected one of {_listing(t['symbols'])}, got {_short(v)}")
            elif v not in t["symbols"]:
                self.fail(path, f"{v!r} is not one of {_listing(t['symbols'])}")
            return v
        if kind == "array":
            if not isinstance(v, list):
                self.fail(path, f"expected a list, got {type(v).__name__} {_short(v)}")
                return v
            return [self.value(item, t["items"], f"{path}[{i}]") for i, item in enumerate(v)]
        if kind == "map":
            if not isinstance(v, dict):
                self.fail(path, f"expected a dict of string keys, got {type(v).__name__}")
                return v
            out = {}
            for key, item in v.items():
                if not isinstance(key, str):
                    self.fail(path, f"map keys must be strings, got {_short(key)}")
                out[key] = self.value(item, t["values"], f"{path}[{key!r}]")
            return out
        if kind == "fixed":
            if not isinstance(v, (bytes, bytearray)) or len(v) != t["size"]:
                self.fail(path, f"expected {t['size']} bytes, got {_short(v)}")
            else:
                self.logical(v, t, path)
            return v
        if self.primitive(v, kind, path):
            self.logical(v, t, path)
        return v

    def logical(self, v: Any, t: Any, path: str) -> None:
        """Report a value of the underlying type that its logical type cannot be."""
        problem = logical_problem(t, v)
        if problem is not None:
            self.fail(path, problem)

    def primitive(self, v: Any, kind: str, path: str) -> bool:
        why = _primitive_problem(v, kind)
        if why is not None:
            if v is None:
                # NOTE: often an empty cell of a table (pandas' NaN, None, pd.NA come as None).
                why += ": a missing value, in a field that may not be null"
            self.fail(path, why)
        return why is None

    def record(self, v: Any, t: dict, path: str) -> Any:
        if isinstance(v, tuple) and len(v) == 2 and v[0] == t["name"]:
            v = v[1]
        if not isinstance(v, dict):
            self.fail(
                path,
                f"expected a {self.avro.label(t['name'])} record (a dict), "
                f"got {type(v).__name__} {_short(v)}",
            )
            return v
        names = [f["name"] for f in t["fields"]]
        unknown = [k for k in v if k not in names]
        if unknown:
            self.fail(
                path,
                f"unknown field{'s' if len(unknown) > 1 else ''} "
                f"{_listing(unknown)} in {self.avro.label(t['name'])}; "
                f"its fields are {_listing(names)}",
            )
        out = {}
        for f in t["fields"]:
            fpath = f"{path}.{f['name']}" if path else f["name"]
            if f["name"] in v:
                out[f["name"]] = self.value(v[f["name"]], f["type"], fpath)
            elif "default" in f:
                out[f["name"]] = f["default"]
            else:
                self.fail(fpath, f"required field is missing (type {self.avro.label(f['type'])})")
        return out

    def union(self, v: Any, branches: list, path: str) -> Any:
        avro = self.avro
        if v is None:
            if "null" not in branches:
                self.fail(path, f"must not be null (expected {avro.label(branches)})")
            return None
        named = {avro.branch_name(b): b for b in branches}
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str):
            name = v[0]
            if name not in named:
                records = [n for n in named if avro.kind(named[n]) == "record"]
                self.fail(
                    path,
                    f"{name!r} is not a branch of this union; "
                    f"the branches are {_listing(records or list(named))}",
                )
                return v
            return (name, self.value(v[1], named[name], path))
        if isinstance(v, dict):
            return self.union_dict(v, branches, path)
        if isinstance(v, list):
            arrays = [b for b in branches if avro.kind(b) == "array"]
            if arrays:
                # NOTE: a union has one array at most, so a list goes there or nowhere: the
                # problems of its items, with their paths, are the ones to report (not "fits
                # none of null | array<...>").
                return self.value(v, arrays[0], path)
        # A plain value: the first branch it fits, as fastavro would write it.
        probes: list[list[FieldProblem]] = []
        for b in branches:
            kind = avro.kind(b)
            if kind in ("record", "map", "union"):
                continue
            probe: list[FieldProblem] = []
            out = _Checker(avro, probe).value(v, b, path)
            if not probe:
                return out
            if b != "null":
                probes.append(probe)
            if _underlying_fits(avro.resolve(b), v):
                # NOTE: fastavro picks a branch by its underlying type alone (a timestamp-millis
                # branch takes any int), so a value its logical type refuses would be written
                # there, not in a later branch: the logical type's problem is the one to report.
                self.problems.extend(probe)
                return v
        number = _number_branch(avro, branches, v)
        if number is not None:
            # NOTE: fastavro would write a NaN, an infinity or a number out of range into the
            # float or double branch it finds first: that branch's rule is the one it breaks.
            self.fail(path, number)
            return v
        if len(probes) == 1 and len([b for b in branches if b != "null"]) == 1:
            # NOTE: a nullable field of one type: what that type says ("expected an integer
            # (int), got float 1.0: ...") is more use than "fits none of null | int".
            self.problems.extend(probes[0])
            return v
        self.fail(path, f"{_short(v)} fits none of {avro.label(branches)}" + _numpy_hint(v))
        return v

    def union_dict(self, v: dict, branches: list, path: str) -> Any:
        avro = self.avro
        candidates = [branches[i] for i in dict_branches(avro, branches, v)]
        if len(candidates) == 1:
            b = candidates[0]
            out = self.value(v, b, path)
            return (avro.branch_name(avro.resolve(b)), out) if avro.kind(b) == "record" else out
        records = [avro.branch_name(avro.resolve(b)) for b in branches if avro.kind(b) == "record"]
        if not candidates:
            self.fail(
                path,
                f"no branch of this union has exactly the fields {_listing(list(v))}; "
                f"the record branches are {_listing(records)}",
            )
        else:
            names = [avro.branch_name(avro.resolve(b)) for b in candidates]
            self.fail(
                path,
                f"a plain dict with fields {_listing(list(v))} fits several branches "
                f"({_listing(names)}); name the branch with a "
                f'("full.Name", {{...}}) tuple',
            )
        return v


def _underlying_fits(t: Any, v: Any) -> bool:
    """True when ``v`` fits ``t``, a primitive or fixed type with a logical type, as its
    underlying type (the logical type's own rule aside)."""
    if not isinstance(t, dict) or "logicalType" not in t:
        return False
    if t.get("type") == "fixed":
        return isinstance(v, (bytes, bytearray)) and len(v) == t.get("size")
    return isinstance(t.get("type"), str) and _primitive_problem(v, t["type"]) is None


def _number_branch(avro: AvroSchema, branches: list, v: Any) -> str | None:
    """Why a number fits no float or double branch of a union, said for that union (whether it
    takes null), or None: not a number, no such branch, or a branch takes it."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    nullable = "null" in branches
    first = None
    for b in branches:
        kind = avro.kind(b)
        if kind in ("float", "double"):
            why = number_problem(v, kind, nullable=nullable)
            if why is None:
                return None
            first = first or why
    return first


def _primitive_problem(v: Any, kind: str) -> str | None:
    """Why ``v`` is not a value of the primitive Avro type ``kind``, or None when it is."""
    why = _plain_problem(v, kind)
    return None if why is None else why + _numpy_hint(v)


def _numpy_hint(v: Any) -> str:
    """What to do when ``v`` is a numpy scalar (else ""), for a message that refuses it.

    NOTE: a cell of a pandas row or a numpy array is a numpy scalar (numpy.int64 is no int): the
    value is right, its type is not Python's, and the message said only "got int64 5".
    """
    if type(v).__module__ != "numpy":
        return ""
    return (
        f": a numpy {type(v).__name__}, as a cell of a pandas row or a numpy array is; pass "
        "the Python value (.item(), or int(...), float(...), bool(...), str(...))"
    )


def _plain_problem(v: Any, kind: str) -> str | None:
    if kind == "null":
        return None if v is None else f"expected null, got {_short(v)}"
    if kind == "boolean":
        return None if isinstance(v, bool) else f"expected true or false, got {_short(v)}"
    if kind in ("int", "long"):
        lo, hi = _INT_RANGE if kind == "int" else _LONG_RANGE
        if isinstance(v, bool) or not isinstance(v, int):
            got = f"expected an integer ({kind}), got {type(v).__name__} {_short(v)}"
            if isinstance(v, float) and v.is_integer():
                # NOTE: pandas holds a column of whole numbers with an empty cell as floats.
                got += (
                    ": a whole number held as a float, as pandas holds a column of whole "
                    "numbers with an empty cell; pass int(...), or give the column pandas' "
                    "nullable 'Int64' dtype"
                )
            return got
        if lo <= v <= hi:
            return None
        return f"{whole_number_text(v)} is out of the {kind} range {lo}..{hi}"
    if kind in ("float", "double"):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"expected a number ({kind}), got {type(v).__name__} {_short(v)}"
        return number_problem(v, kind)
    if kind == "string":
        if isinstance(v, str):
            return None
        return f"expected a string, got {type(v).__name__} {_short(v)}"
    if kind == "bytes":
        if isinstance(v, (bytes, bytearray)):
            return None
        return f"expected bytes, got {type(v).__name__} {_short(v)}"
    return f"unsupported Avro type {kind!r}"
