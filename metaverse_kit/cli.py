"""The ``metaverse`` command: set up a workspace, the demo, schemas, emit, replay, ingest.

Exit status: 0 on success; 2 on a user error (one line saying what to do, no traceback): a
wrong argument, a bad input file, an invalid event or schema, a workspace that cannot be
written (read-only, full disk, no permission); 1 on anything unexpected (with its traceback, for
a bug report); 130 when interrupted. The workspace is ``--workspace PATH``, else
``$METAVERSE_HOME``, else ``./.metaverse``; global options go before or after the subcommand.

Adding a subcommand is one function registered with :func:`command`::

    def _doctor_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repair", action="store_true", help="...")

    @command("doctor", "check the workspace for damage", _doctor_arguments)
    def _doctor(args: argparse.Namespace) -> None:
        with open_workspace(args) as ws:
            ...

Raise :class:`UsageError` (or any ``MetaverseError``) for what the user must fix; read input
files with :func:`read_text`; ``OSError`` from the workspace is turned into one line by
:func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import json
import os
import re
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from metaverse_kit.errors import MetaverseError, MetaverseWarning

__all__ = [
    "INTERRUPTED",
    "Subcommands",
    "UsageError",
    "command",
    "main",
    "open_workspace",
    "read_text",
]


class UsageError(MetaverseError):
    """A command-line argument or input file is wrong; the message says which and what to do."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (argparse prints the whole usage first) that
    suggest the closest name for a mistyped option or choice."""

    _given: Sequence[str] = ()

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """As argparse's; the arguments are kept for :meth:`error`'s suggestions."""
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """Print one line saying what is wrong and where help is, then exit with status 2."""
        self.exit(2, f"{self.prog}: error: {self._explained(message)}; see '{self.prog} --help'\n")

    def _explained(self, message: str) -> str:
        given = list(self._given)
        if "--" in given:  # NOTE: what follows is positional, whatever it looks like
            given = given[: given.index("--")]
        known = _option_strings(self, given)
        unknown = [
            a.split("=", 1)[0]
            for a in given
            if a.startswith("--") and not any(o.startswith(a.split("=", 1)[0]) for o in known)
        ]
        if unknown and not message.startswith("unrecognized arguments"):
            # NOTE: a mistyped required option (--ot for --out) was reported as "--out is
            # required", which sent the user looking for what they had typed.
            message = f"unrecognized arguments: {' '.join(unknown)}"
        if message.startswith("unrecognized arguments: "):
            words = message.removeprefix("unrecognized arguments: ").split()
            hints = [
                f"{w} (did you mean {match[0]}?)"
                if w.startswith("-")
                and (match := difflib.get_close_matches(w.split("=", 1)[0], known, n=1))
                else w
                for w in words
            ]
            return f"unrecognized arguments: {' '.join(hints)}"
        choice = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if choice:
            choices = re.findall(r"'([^']*)'", choice.group(2))
            match = difflib.get_close_matches(choice.group(1), choices, n=1)
            if match:
                return f"{message} (did you mean '{match[0]}'?)"
        return message


def _option_strings(parser: argparse.ArgumentParser, given: Sequence[str]) -> list[str]:
    """The long options of ``parser`` and of the subcommands ``given`` names below it (an
    option of ``replay`` is reported as unrecognised by the top parser)."""
    found: list[str] = []
    for action in parser._actions:
        found += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            child = next((action.choices[a] for a in given if a in action.choices), None)
            if child is not None:
                found += _option_strings(child, given)
    return sorted(set(found))


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] | None
    run: Callable[[argparse.Namespace], int | None]


_COMMANDS: dict[str, _Command] = {}

#: A subcommand: returns None (or 0) on success, or its own exit status.
Runner = Callable[[argparse.Namespace], int | None]


def command(
    name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Runner], Runner]:
    """Register ``metaverse NAME``: ``arguments`` adds its options, the decorated function runs it.

    The subcommand's parser already has the global options (``--workspace``); nested
    subcommands get them from :func:`subcommands`.
    """

    def register(run: Runner) -> Runner:
        _COMMANDS[name] = _Command(name, help, arguments, run)
        return run

    return register


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # NOTE: on subcommand parsers the default is SUPPRESS, so an option given before the
    # subcommand is not overwritten by the subcommand parser's default.
    parser.add_argument(
        "--workspace",
        metavar="PATH",
        default=None if top else argparse.SUPPRESS,
        help="local workspace folder (default: $METAVERSE_HOME or ./.metaverse)",
    )


class Subcommands:
    """Nested subcommands (``schemas list``) whose parsers take the global options too."""

    def __init__(self, parser: argparse.ArgumentParser, dest: str) -> None:
        self._action = parser.add_subparsers(dest=dest, required=True, metavar=dest.upper())

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A subcommand's parser, with ``--workspace``; ``kwargs`` as argparse's."""
        child: argparse.ArgumentParser = self._action.add_parser(name, **kwargs)
        _global_options(child, top=False)
        return child


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="metaverse",
        description="Metadata change events on Azure (or a local workspace), from the shell.",
    )
    _global_options(p, top=True)
    sub = Subcommands(p, "command")
    for c in _COMMANDS.values():
        child = sub.add_parser(c.name, help=c.help)
        if c.arguments is not None:
            c.arguments(child)
    return p


# -- helpers for commands ------------------------------------------------------------------------


def open_workspace(args: argparse.Namespace, *, existing: bool = False) -> Any:
    """The workspace ``--workspace`` (or the default) names, opened (created when missing).

    ``existing=True``, for commands that only read, refuses a local workspace that is not
    there: created empty, a mistyped path would answer "no events" (Azure keeps its history
    in the cloud; its local folder holds only the outbox).
    """
    from metaverse_kit.config import default_backend, default_workspace_path
    from metaverse_kit.workspace import connect

    _workspace_option(args)
    if existing and default_backend(workspace=args.workspace) == "local":
        from metaverse_kit.backends.local.factory import existing_settings

        existing_settings(
            Path(args.workspace).expanduser() if args.workspace else default_workspace_path()
        )
    return connect(path=args.workspace) if args.workspace else connect()


def _workspace_option(args: argparse.Namespace) -> str | None:
    """``--workspace`` as given (None when left out); :class:`UsageError` when it is empty or
    names a file."""
    given: str | None = args.workspace
    if given is not None and not given.strip():
        # NOTE: an unset variable in a script (--workspace "$WS") gave "", which fell back to
        # the default workspace and wrote there.
        raise UsageError(
            "--workspace is empty (an unset variable?); give the workspace folder, or leave the "
            "option out for $METAVERSE_HOME or ./.metaverse"
        )
    if given is not None and Path(given).expanduser().is_file():
        # NOTE: said so, not "Cannot use <file>/config.toml: a part of the path is a file".
        raise UsageError(
            f"--workspace {given} is a file, not a folder: give the workspace's folder"
        )
    return given


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of an input file; :class:`UsageError` saying why it cannot be read."""
    try:
        _check_input_file(path, what)
        return path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{what} {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position "
            f"{exc.start}); save it as UTF-8"
        ) from exc
    except OSError as exc:
        raise UsageError(f"Cannot read {_lower_first(what)} {path}: {_os_reason(exc)}") from exc


def _check_input_file(path: Path, what: str) -> None:
    """Refuse an input ``path`` that is a device: :class:`UsageError` naming it.

    NOTE: ``/dev/zero`` (or ``/dev/urandom``) never ends: reading it filled the memory until
    the machine gave out. Pipes stay allowed (``--file <(jq ...)``), as do missing files, which
    the read itself reports.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise UsageError(
            f"{what} {path} is a device, not a file: give a file (or a pipe) that holds the input"
        )


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _print_receipts(receipts: Sequence[Any]) -> None:
    for r in receipts:
        print(
            f"MCE Published: partition {r.partition}, sequence number {r.sequence_number}, "
            f"offset {r.offset}, schema id {r.schema_id}"
        )


# -- init ----------------------------------------------------------------------------------------


def _init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sample", action="store_true", help="also emit the sample history when the lake is empty"
    )


@command("init", "create the workspace and register the built-in schemas", _init_arguments)
def _init(args: argparse.Namespace) -> None:
    from metaverse_kit.demo import emit_sample_history

    with open_workspace(args) as ws:
        print(f"Workspace ready: {ws!r}")
        if args.sample:
            if ws.lake.list_files():
                print("The lake already has events; no sample history added.")
            else:
                receipts = emit_sample_history(ws)
                print(f"Sample history: {len(receipts)} events emitted.")


# -- demo ----------------------------------------------------------------------------------------


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--path",
        metavar="PATH",
        help="where to create the demo workspace (default: a temporary folder)",
    )


@command("demo", "the whole flow headless in a fresh workspace", _demo_arguments)
def _demo(args: argparse.Namespace) -> None:
    from metaverse_kit.demo import emit_sample_history, summary
    from metaverse_kit.workspace import connect

    path = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="metaverse-demo-"))
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"The demo needs a new or empty folder; {path} has files in it")
    with connect("local", path=path) as ws:
        groups = ws.registry.list_groups()
        print(
            f"Workspace {path}: schema groups {', '.join(groups)}; schemas registered: "
            + ", ".join(ws.registry.list_schemas(ws.schema_group))
        )
        receipts = emit_sample_history(ws)
        print(
            f"Emitted {len(receipts)} events; the first landed in "
            f"{os.path.relpath(receipts[0].location or '', path)}"
        )
        table = ws.replay(progress=False)
        print(summary(table))


# -- schemas -------------------------------------------------------------------------------------


def _schemas_arguments(p: argparse.ArgumentParser) -> None:
    actions = Subcommands(p, "action")
    ls = actions.add_parser("list", help="groups, schemas and versions")
    ls.add_argument("--group", help="only this schema group")
    show = actions.add_parser("show", help="a schema's definition and properties")
    show.add_argument("schema", help="a schema id, or a schema name (with --group)")
    show.add_argument("--group", help="schema group (default: the workspace's)")
    show.add_argument("--version", type=int, help="version number (default: the latest)")
    reg = actions.add_parser("register", help="register an .avsc file as the next version")
    reg.add_argument("file", type=Path)
    reg.add_argument("--group", help="schema group (default: the workspace's)")


@command("schemas", "list, show or register schemas", _schemas_arguments)
def _schemas(args: argparse.Namespace) -> None:
    with open_workspace(args) as ws:
        registry = ws.registry
        if args.action == "list":
            for group in [args.group] if args.group else registry.list_groups():
                info = registry.get_group(group)
                print(f"{group} (compatibility {info.compatibility})")
                for name in registry.list_schemas(group):
                    for version in registry.list_versions(group, name):
                        schema = registry.get_schema(group_name=group, name=name, version=version)
                        print(f"  {name}  v{version}  {schema.properties.id}")
        elif args.action == "show":
            schema = _find_schema(
                registry, args.schema, args.group or ws.schema_group, args.version
            )
            p = schema.properties
            print(f"# {p.name} v{p.version} in group {p.group_name}, id {p.id}")
            print(json.dumps(json.loads(schema.definition), indent=2))
        else:
            text = read_text(args.file, "The schema file")
            props = registry.register_schema(args.group or ws.schema_group, text)
            print(
                f"Registered {props.name} v{props.version} in group {props.group_name}: "
                f"id {props.id}"
            )


def _find_schema(registry: Any, key: str, group: str, version: int | None) -> Any:
    from metaverse_kit.errors import SchemaNotFoundError

    if version is None:
        try:
            return registry.get_schema(key)
        except SchemaNotFoundError:
            versions = registry.list_versions(group, key)
            if not versions:
                raise SchemaNotFoundError(
                    f"No schema with id or name {key!r} in group {group!r}"
                ) from None
            version = versions[-1]
    return registry.get_schema(group_name=group, name=key, version=version)


# -- emit ----------------------------------------------------------------------------------------


def _emit_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--file", type=Path, help="one MCE or a list, as plain JSON or in Avro's JSON encoding"
    )
    src.add_argument(
        "--example", action="store_true", help="the example CorpUser MCE of the original framework"
    )


class _RepeatedKeyError(ValueError):
    """A JSON object gives a key twice (``args[0]`` is the key)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: the object, refusing a key given twice (two
    ``proposedSnapshot`` keys emitted only the second, without a word)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKeyError(key)
        out[key] = value
    return out


def _events_in(path: Path) -> list[Any]:
    """The MCEs of an ``emit --file`` file: one JSON object, or a non-empty list of them."""
    from metaverse_kit.events.builtin import mce_definition
    from metaverse_kit.events.jsonform import from_json

    try:
        data = json.loads(read_text(path, "The events file"), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    except _RepeatedKeyError as exc:
        raise UsageError(
            f"{path} gives the key {exc.args[0]!r} twice in one object; JSON readers keep one of "
            "the two values (Python the last): keep one"
        ) from exc
    items = data if isinstance(data, list) else [data]
    if not items:
        raise UsageError(f"{path} holds an empty list: give one MCE (a JSON object) or a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            where = f"item {i} of {path}" if isinstance(data, list) else str(path)
            raise UsageError(
                f"{where} is a JSON {_json_kind(item)}, not an MCE: give one MCE (a JSON "
                "object) or a list of them"
            )
    definition = mce_definition()
    return [from_json(item, definition) for item in items]


def _json_kind(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


@command("emit", "emit MCEs from a JSON file, or the example MCE", _emit_arguments)
def _emit(args: argparse.Namespace) -> None:
    from metaverse_kit.events.aspects import example_mce

    # NOTE: the file is read and checked before the workspace is opened (or created).
    records = [example_mce()] if args.example else _events_in(args.file)
    with open_workspace(args) as ws:
        _print_receipts(ws.emit(records if len(records) > 1 else records[0]))


# -- replay --------------------------------------------------------------------------------------


def _partition(value: str) -> str:
    """``--partition``'s value, checked as an Event Hubs partition id."""
    from metaverse_kit.errors import ConfigurationError
    from metaverse_kit.names import partition_ids

    try:
        (checked,) = partition_ids([value], what="--partition") or ()
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return checked


def _time(*words: str) -> Callable[[str], str]:
    """An argparse ``type``: an ISO 8601 time (or one of ``words``), kept as given.

    NOTE: checked here so that the error names the option: the library's said "start must
    be an ISO 8601 time", and no option is called start.
    """

    def check(value: str) -> str:
        from metaverse_kit._time import utc_time

        if value in words:
            return value
        try:
            utc_time(value, "time", error=UsageError)
        except UsageError:
            either = "".join(f"'{w}', " for w in words) + ("or " if words else "")
            raise argparse.ArgumentTypeError(
                f"give {either}an ISO 8601 time such as 2026-01-31T12:00:00Z, not {value!r}"
            ) from None
        return value

    return check


def _out_path(value: str) -> Path:
    """``--out``'s value as a path; an empty one is refused.

    NOTE: an unset variable (``--out "$OUT"``) gave "", which is the current folder: the
    history was exported into whatever folder the command ran in.
    """
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "is empty (an unset variable?): give a .parquet file to write, or a folder for a "
            "Parquet dataset"
        )
    return Path(value)


def _replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_time(), help="ISO 8601 time, e.g. 2026-01-31T00:00:00Z")
    p.add_argument("--until", type=_time(), help="ISO 8601 time")
    p.add_argument(
        "--partition", action="append", type=_partition, help="partition id (repeatable)"
    )
    p.add_argument(
        "--out",
        type=_out_path,
        required=True,
        help="a .parquet file to write, or a folder: a dataset partitioned by event date, to "
        "which each run appends the Capture files that are new",
    )
    p.add_argument("--format", choices=["parquet"], default="parquet", help="output format")
    p.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="skip damaged Capture files and blocks (every intact block is kept)",
    )


@command(
    "replay",
    "replay the lake into a Parquet file, or append it to a Parquet dataset",
    _replay_arguments,
)
def _replay(args: argparse.Namespace) -> None:
    import io

    import pyarrow.parquet as pq

    from metaverse_kit._files import atomic_write
    from metaverse_kit._time import utc_time

    if args.since and args.until:
        since, until = (utc_time(t, "time", error=UsageError) for t in (args.since, args.until))
        if since > until:
            raise UsageError(f"--since {args.since} is after --until {args.until}: swap them")
    out: Path = args.out
    if out.suffix.lower() != ".parquet":
        if out.suffix:
            raise UsageError(
                f"--out must name a .parquet file, or a folder for a Parquet dataset, not {out}"
            )
        _replay_to_dataset(args)
        return
    if out.is_dir():
        # NOTE: Spark names its output folders *.parquet; said before the replay, not after.
        raise UsageError(
            f"{out} is a folder: --out names a .parquet file to write, or a folder without the "
            ".parquet suffix for a Parquet dataset"
        )
    _check_output_folder(out)
    with open_workspace(args, existing=True) as ws:
        table = _replay_table(ws, args)

        buf = io.BytesIO()
        pq.write_table(table, buf)
        try:
            # NOTE: written whole and moved into place, so a failed run never leaves half a file.
            atomic_write(out, buf.getvalue())
        except OSError as exc:
            # NOTE: the workspace's wording ("this workspace is read-only") was about --out.
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            raise UsageError(f"Cannot write --out {out}: {_out_reason(cause)}") from exc
        print(f"Wrote {table.num_rows} events to {out}")


def _check_output_folder(out: Path) -> None:
    """Refuse an ``--out`` file whose existing folder cannot be written, before the replay
    (which can take minutes) rather than after it."""
    folder = out.parent
    if not folder.is_dir():
        return  # NOTE: created by the write, which reports what refuses it
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=f".probe.{os.getpid()}."):
            pass
    except OSError as exc:
        raise UsageError(f"Cannot write --out {out}: {_out_reason(exc)}") from exc


def _out_reason(exc: OSError) -> str:
    reason = (exc.strerror or str(exc)).lower()
    return f"{reason}; choose a folder you can write, with room for the file"


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # NOTE: replaced by something without it, or closed
        return False


def _replay_table(ws: Any, args: argparse.Namespace) -> Any:
    """The replay of ``metaverse replay``; with --skip-bad-files, what was skipped is listed."""
    from metaverse_kit.errors import CaptureFileWarning
    from metaverse_kit.history.decode import skipped_files

    with warnings.catch_warnings():
        # NOTE: the parts skipped are listed below, one line each, instead of a warning.
        warnings.simplefilter("ignore", CaptureFileWarning)
        table = ws.replay(
            args.since,
            args.until,
            args.partition,
            on_bad_file="skip" if args.skip_bad_files else "raise",
            # NOTE: a bar only on a terminal: in a script's log or a pipe it was lines of
            # carriage returns (the default decides on the number of files alone).
            progress=None if _stderr_is_terminal() else False,
        )
    _print_skipped(skipped_files(table))
    return table


def _print_skipped(parts: Any) -> None:
    """One line on stderr per damaged part a replay with --skip-bad-files left out."""
    for part in parts:
        where = "whole file" if part.offset is None else f"from byte {part.offset}"
        print(f"skipped {part.path} ({where}): {part.reason}", file=sys.stderr)


def _replay_to_dataset(args: argparse.Namespace) -> None:
    """``metaverse replay --out DIR``: append what is new in the lake to a Parquet dataset."""
    from metaverse_kit.errors import CaptureFileWarning
    from metaverse_kit.history.export import export_parquet

    ranges = [f"--{n}" for n in ("since", "until", "partition") if getattr(args, n)]
    if ranges:
        raise UsageError(
            f"{', '.join(ranges)} cannot be used with a dataset folder: each run appends the "
            f"whole history that is new; filter when you read it (or --out a .parquet file)"
        )
    with open_workspace(args, existing=True) as ws, warnings.catch_warnings():
        # NOTE: the parts skipped are listed below, one line each, instead of a warning.
        warnings.simplefilter("ignore", CaptureFileWarning)
        report = export_parquet(
            ws.lake,
            args.out,
            registry=ws.registry,
            schema_group=ws.schema_group,
            on_bad_file="skip" if args.skip_bad_files else "raise",
        )
    print(report)
    _print_skipped(report.skipped)


# -- ingest --------------------------------------------------------------------------------------


def _ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run a recipe (source: {type, config}, pipeline_name). Exit status 0 when all went well, "
        "1 when some entities failed, 2 for a bad recipe or an unreachable source."
    )
    p.add_argument("recipe", type=Path, help="the recipe, a YAML file")
    p.add_argument(
        "--dry-run", action="store_true", help="emit nothing; print what would change, per entity"
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="csv source: overwrite tags, owners and terms instead of adding to them",
    )


@command(
    "ingest",
    "read a source (database, files, registry, CSV of edits) and emit what changed",
    _ingest_arguments,
)
def _ingest(args: argparse.Namespace) -> int:
    from metaverse_kit.ingest import load_recipe
    from metaverse_kit.ingest.runner import ingest

    _check_input_file(args.recipe, "The recipe")
    recipe = load_recipe(args.recipe)
    if args.replace:
        if recipe.source_type != "csv":
            raise UsageError(f"--replace applies to the csv source, not {recipe.source_type!r}")
        recipe = dataclasses.replace(recipe, config={**recipe.config, "replace": True})

    def show(change: Any) -> None:
        if args.dry_run and change.kind != "unchanged":
            from tqdm import tqdm

            tqdm.write("\n".join(change.lines()))

    with open_workspace(args) as ws:
        # NOTE: progress=None: a bar only on a terminal, not in a script's log or a pipe.
        report = ingest(
            ws, recipe, dry_run=args.dry_run, progress=None, keep_events=False, on_change=show
        )
    print(report.summary())
    return report.exit_status


# -- doctor --------------------------------------------------------------------------------------


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repair",
        action="store_true",
        help="local: keep the intact blocks of damaged files (the originals go to quarantine/), "
        "roll back a killed send, delete crash leftovers",
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="Azure: also register the built-in schema and send one probe event (marked as such)",
    )


@command(
    "doctor",
    "check the workspace: locally damaged files, crash leftovers, a stuck journal, the outbox; "
    "on Azure each role the toolkit needs",
    _doctor_arguments,
)
def _doctor(args: argparse.Namespace) -> None:
    """Exit 0 when nothing needs attention, 2 (one line on stderr) when something does."""
    from metaverse_kit.config import default_backend

    _workspace_option(args)
    if default_backend(workspace=args.workspace) == "azure":
        if args.repair:
            raise UsageError("--repair applies to a local workspace; on Azure use --write or none")
        _doctor_azure(args)
    else:
        if args.write:
            raise UsageError("--write checks an Azure workspace; this one is local")
        _doctor_local(args)


def _doctor_local(args: argparse.Namespace) -> None:
    from metaverse_kit.backends.local.doctor import LocalDoctor
    from metaverse_kit.config import default_workspace_path

    doctor = LocalDoctor(Path(args.workspace) if args.workspace else default_workspace_path())
    if args.repair:
        for action in doctor.repair():
            print(f"repaired: {action}")
    findings = doctor.check()
    for finding in findings:
        print(finding)
    problems = [f for f in findings if f.severity != "info"]
    if problems:
        fixable = sum(f.repairable for f in problems)
        hint = (
            f"; `metaverse doctor --repair` fixes {fixable}" if fixable and not args.repair else ""
        )
        raise UsageError(f"{len(problems)} problem(s) in {doctor.root} need attention{hint}")
    print(f"The workspace {doctor.root} is healthy.")


def _doctor_azure(args: argparse.Namespace) -> None:
    import logging

    from metaverse_kit.backends.azure.doctor import diagnose, format_findings
    from metaverse_kit.backends.azure.factory import LazyDefaultCredential
    from metaverse_kit.workspace import connect

    # NOTE: DefaultAzureCredential logs every credential it tried; the finding says what to do.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    credential = LazyDefaultCredential()
    with connect("azure", path=args.workspace, credential=credential) as ws:
        changes = "; --write: registers the built-in schema, sends one probe event" * args.write
        print(f"Checking {ws!r} with DefaultAzureCredential{changes}", flush=True)
        findings = diagnose(
            registry=ws.registry,
            hub=ws.hub,
            lake=ws.lake,
            schema_group=ws.schema_group,
            credential=credential,
            write=args.write,
        )
    print(format_findings(findings))
    errors = sum(f.severity == "error" for f in findings)
    if errors:
        raise UsageError(f"{errors} check(s) failed; the fixes are listed above")


# -- tail ----------------------------------------------------------------------------------------


def _tail_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since",
        default="latest",
        type=_time("latest", "earliest"),
        help="'latest' (default: from now on), 'earliest', or an ISO 8601 time",
    )
    p.add_argument(
        "--partition", action="append", type=_partition, help="partition id (repeatable)"
    )
    p.add_argument("--consumer-group", default="$Default", help="default: $Default")
    p.add_argument(
        "--checkpoint", metavar="NAME", help="store progress under NAME and resume from it"
    )


@command("tail", "print events as they arrive, one line each (Ctrl-C stops)", _tail_arguments)
def _tail(args: argparse.Namespace) -> None:
    from metaverse_kit.history.tail import event_lines

    with (
        open_workspace(args, existing=True) as ws,
        ws.tail(
            start=args.since,
            partitions=args.partition,
            consumer_group=args.consumer_group,
            checkpoint=args.checkpoint,
        ) as tail,
    ):
        print(f"Following {ws!r} from {args.since}; Ctrl-C stops.", file=sys.stderr, flush=True)
        for batch in tail:
            for line in event_lines(batch):
                print(line, flush=True)


# -- app -----------------------------------------------------------------------------------------


def _app_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8866, help="default: 8866")
    p.add_argument("--token", help="the token visitors must give (default: a random one)")
    p.add_argument("--theme", choices=("light", "dark"), default="light")
    p.add_argument(
        "--planner",
        metavar="MODULE:FUNCTION",
        help="the Bulk edit tab's row planner (default: $METAVERSE_PLANNER)",
    )


@command("app", "serve the steward app (Voila) on 127.0.0.1 with a token", _app_arguments)
def _app(args: argparse.Namespace) -> None:
    from metaverse_kit.app import AppServer, new_token, serve
    from metaverse_kit.config import app_planner, default_workspace_path

    given = _workspace_option(args)
    # NOTE: expanded here: the kernels get the path in their environment, where no shell
    # expands '~' (a quoted --workspace='~/ws' named <cwd>/~/ws for them).
    workspace = Path(given).expanduser() if given else default_workspace_path()
    server = AppServer(
        port=args.port,
        # NOTE: an empty --token (an unset variable) is refused by app_command, not replaced.
        token=new_token() if args.token is None else args.token,
        workspace=workspace.resolve(),
        planner=args.planner or app_planner(),
        theme=args.theme,
    )

    def ready() -> None:
        # NOTE: called once serve has checked Voila, the options and the port: nothing is
        # printed for a server that will not start.
        with open_workspace(args) as ws:
            print(f"Steward app for {ws!r}", flush=True)
        print(f"Open {server.url}  (127.0.0.1 only; Ctrl-C stops)", flush=True)

    status = serve(server, ready=ready)
    if status > 0:  # NOTE: negative: Voila was stopped by a signal, as asked
        raise UsageError(f"Voila exited with status {status}; its messages are above")


# -- running -------------------------------------------------------------------------------------

_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space, or use another --workspace",
    errno.EDQUOT: "the disk quota is used up: free some space, or use another --workspace",
    errno.EROFS: "the file system is read-only: use a workspace you can write (--workspace PATH)",
    errno.EACCES: "permission denied: use a folder you can write, or ask for access",
    errno.EPERM: "operation not permitted: use a folder you can write, or ask for access",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "it already exists",
    errno.EFBIG: "the file is too large for this file system",
    errno.ENAMETOOLONG: "the name is too long",
}


def _os_reason(exc: OSError) -> str:
    return _OS_HINTS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def _os_error(exc: OSError, args: argparse.Namespace) -> str:
    notes = getattr(exc, "__notes__", None)
    if notes:
        # The code that knew what it was writing said so (an export run): no workspace guess.
        return f"{exc.strerror or exc}; {' '.join(notes)}"
    if exc.filename is not None:
        where = str(exc.filename)
    else:
        from metaverse_kit.config import default_workspace_path

        where = f"the workspace {args.workspace or default_workspace_path()}"
    return f"Cannot use {where}: {_os_reason(exc)}"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def _warning_printer(name: str, show: Any) -> Any:
    """``warnings.showwarning`` for a command: a :class:`MetaverseWarning` as one line on stderr
    (``metaverse <name>: warning: ...``), any other warning as ``show`` does."""

    def printer(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, MetaverseWarning):
            print(f"metaverse {name}: warning: {_one_line(str(message))}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return printer


class _OutputError(BaseException):
    """Writing the command's output (stdout) failed; ``args[0]`` is the ``OSError``.

    NOTE: a BaseException, like KeyboardInterrupt: output that cannot be written ends the
    command, and no ``except Exception`` on the way (an ingest counting a failed entity) keeps
    it going or reports it as something else.
    """


class _Output:
    """``sys.stdout`` while a command runs: an ``OSError`` writing it is an :class:`_OutputError`.

    NOTE: stdout on a full disk (``> file``) was reported as "Cannot use the workspace ...:
    the disk is full", and output written at exit failed after the exit status was chosen.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Write ``text`` to the real stdout; what its encoding cannot hold as ``\\x..``."""
        try:
            try:
                return int(self._stream.write(text))
            except UnicodeEncodeError:
                # NOTE: a file name that is not UTF-8 (``--out $'\xff.parquet'``) reaches us
                # as surrogates, which a UTF-8 locale's strict stdout refused with a traceback
                # after the work was done; stderr writes them this way too.
                encoding = getattr(self._stream, "encoding", None) or "utf-8"
                safe = text.encode(encoding, "backslashreplace").decode(encoding)
                return int(self._stream.write(safe))
        except OSError as exc:
            raise _OutputError(exc) from exc

    def flush(self) -> None:
        """Flush the real stdout."""
        try:
            self._stream.flush()
        except OSError as exc:
            raise _OutputError(exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _drop_output(stream: Any) -> None:
    """Point ``stream``'s file at /dev/null, so that what it still holds is not written (and
    does not fail again, as "Exception ignored ...") when Python exits."""
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError):
        return  # NOTE: not a real file (a test's capture): nothing is written at exit
    os.dup2(devnull, fd)
    os.close(devnull)


#: The exit status of a command interrupted (Ctrl-C, SIGINT), as a shell reports one.
INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring).

    A Ctrl-C at any moment of the run ends it with :data:`INTERRUPTED` and no traceback.
    Without ``argv`` (the console script, ``python -m metaverse_kit.cli``) this process is the
    command: a Ctrl-C after the command has ended is ignored, so that the exit status stays
    the command's.
    """
    try:
        status = _run(argv)
    except KeyboardInterrupt:
        # NOTE: here, not only around the subcommand: building the parser, parsing and the
        # last flush of the output were outside it, and a Ctrl-C there printed a traceback.
        status = INTERRUPTED
    if argv is None:
        _ignore_interrupts()
    return status


def _ignore_interrupts() -> None:
    """Ignore SIGINT from now on in this process (when this is its main thread).

    NOTE: between the return of :func:`main` and the process's end (the console script's
    ``sys.exit``, the interpreter's exit handlers) a Ctrl-C printed a KeyboardInterrupt
    traceback and replaced the command's exit status.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(argv: Sequence[str] | None) -> int:
    """:func:`main`'s run, with stdout replaced as :class:`_Output` says."""
    real = sys.stdout
    if real is not None:  # NOTE: None when started with stdout closed: print() writes nothing
        sys.stdout = _Output(real)
    try:
        status = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # NOTE: here, so that a failure to write changes the exit status
        return status
    except _OutputError as exc:
        _drop_output(real)
        cause: OSError = exc.args[0]
        if isinstance(cause, BrokenPipeError):  # output piped into head and closed early
            return 0
        reason = (cause.strerror or str(cause)).lower()
        print(
            f"metaverse: error: Cannot write the output (standard output): {reason}; free some "
            "space or send it elsewhere",
            file=sys.stderr,
        )
        return 2
    finally:
        sys.stdout = real


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage line
        return 0 if exc.code == 0 else 2
    name = args.command
    try:
        with warnings.catch_warnings():
            # NOTE: our warnings are lines of the command's output, each time, not Python's
            # two lines naming the console script.
            warnings.filterwarnings("always", category=MetaverseWarning)
            warnings.showwarning = _warning_printer(name, warnings.showwarning)
            status = _COMMANDS[name].run(args)
    except MetaverseError as exc:
        message = _one_line(str(exc))
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # a pipe of ours, read by a process that ended
            raise _OutputError(exc) from exc
        message = _one_line(_os_error(exc, args))
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception:  # anything unexpected keeps its traceback, for a bug report
        import traceback

        traceback.print_exc()
        return 1
    else:
        return status or 0
    print(f"metaverse {name}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
