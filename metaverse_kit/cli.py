"""The ``metaverse`` command: set up a workspace, run the demo, manage schemas, emit, replay.

Exit status: 0 on success; 2 on a user error (a one-line message, no traceback); 1 on anything
unexpected. The workspace is ``--workspace PATH``, else ``$METAVERSE_HOME``, else ``./.metaverse``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metaverse_kit.errors import MetaverseError

__all__ = ["main"]


class UsageError(MetaverseError):
    """A command-line argument is wrong; the message says which and what was expected."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metaverse",
        description="Metadata change events on Azure (or a local workspace), from the shell.",
    )
    p.add_argument(
        "--workspace",
        metavar="PATH",
        help="local workspace folder (default: $METAVERSE_HOME or ./.metaverse)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", help="create the workspace and register the built-in schemas")
    init.add_argument(
        "--sample", action="store_true", help="also emit the sample history when the lake is empty"
    )

    demo = sub.add_parser("demo", help="the whole flow headless in a fresh workspace")
    demo.add_argument(
        "--path",
        metavar="PATH",
        help="where to create the demo workspace (default: a temporary folder)",
    )

    schemas = sub.add_parser("schemas", help="list, show or register schemas")
    ssub = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = ssub.add_parser("list", help="groups, schemas and versions")
    ls.add_argument("--group", help="only this schema group")
    show = ssub.add_parser("show", help="a schema's definition and properties")
    show.add_argument("schema", help="a schema id, or a schema name (with --group)")
    show.add_argument("--group", help="schema group (default: the workspace's)")
    show.add_argument("--version", type=int, help="version number (default: the latest)")
    reg = ssub.add_parser("register", help="register an .avsc file as the next version")
    reg.add_argument("file", type=Path)
    reg.add_argument("--group", help="schema group (default: the workspace's)")

    emit = sub.add_parser("emit", help="emit MCEs from a JSON file, or the example MCE")
    src = emit.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--file", type=Path, help="one MCE or a list, as plain JSON or in Avro's JSON encoding"
    )
    src.add_argument(
        "--example", action="store_true", help="the example CorpUser MCE of the original framework"
    )

    replay = sub.add_parser("replay", help="replay the lake into a Parquet file")
    replay.add_argument("--since", help="ISO 8601 time, e.g. 2026-01-31T00:00:00Z")
    replay.add_argument("--until", help="ISO 8601 time")
    replay.add_argument("--partition", action="append", help="partition id (repeatable)")
    replay.add_argument("--out", type=Path, required=True, help="the Parquet file to write")

    tail = sub.add_parser("tail", help="print events as they arrive, one line each (Ctrl-C stops)")
    tail.add_argument(
        "--since",
        default="latest",
        help="'latest' (default: from now on), 'earliest', or an ISO 8601 time",
    )
    tail.add_argument("--partition", action="append", help="partition id (repeatable)")
    tail.add_argument("--consumer-group", default="$Default", help="default: $Default")
    tail.add_argument(
        "--checkpoint", metavar="NAME", help="store progress under NAME and resume from it"
    )

    app = sub.add_parser("app", help="serve the steward app (Voila) on 127.0.0.1 with a token")
    app.add_argument("--port", type=int, default=8866, help="default: 8866")
    app.add_argument(
        "--workspace",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the workspace the app works on (as the global --workspace)",
    )
    app.add_argument("--token", help="the token visitors must give (default: a random one)")
    app.add_argument("--theme", choices=("light", "dark"), default="light")
    app.add_argument(
        "--planner",
        metavar="MODULE:FUNCTION",
        help="the Bulk edit tab's row planner (default: $METAVERSE_PLANNER)",
    )

    doctor = sub.add_parser(
        "doctor", help="check that the Azure identity in use can do what the toolkit does"
    )
    doctor.add_argument(
        "--write",
        action="store_true",
        help="also register the built-in schema and send one probe event (marked as such)",
    )
    return p


def _connect(args: argparse.Namespace) -> Any:
    from metaverse_kit.workspace import connect

    return connect(path=args.workspace) if args.workspace else connect()


def _print_receipts(receipts: Sequence[Any]) -> None:
    for r in receipts:
        print(
            f"MCE Published: partition {r.partition}, sequence number {r.sequence_number}, "
            f"offset {r.offset}, schema id {r.schema_id}"
        )


def _cmd_init(args: argparse.Namespace) -> None:
    from metaverse_kit.demo import emit_sample_history

    with _connect(args) as ws:
        print(f"Workspace ready: {ws!r}")
        if args.sample:
            if ws.lake.list_files():
                print("The lake already has events; no sample history added.")
            else:
                receipts = emit_sample_history(ws)
                print(f"Sample history: {len(receipts)} events emitted.")


def _cmd_demo(args: argparse.Namespace) -> None:
    from metaverse_kit.demo import emit_sample_history, summary
    from metaverse_kit.workspace import connect

    path = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="metaverse-demo-"))
    if path.exists() and any(path.iterdir()):
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


def _cmd_schemas(args: argparse.Namespace) -> None:
    with _connect(args) as ws:
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
            try:
                text = args.file.read_text("utf-8")
            except OSError as exc:
                raise UsageError(f"Cannot read {args.file}: {exc.strerror}") from exc
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


def _cmd_emit(args: argparse.Namespace) -> None:
    from metaverse_kit.events.aspects import example_mce
    from metaverse_kit.events.builtin import mce_definition
    from metaverse_kit.events.jsonform import from_json

    with _connect(args) as ws:
        if args.example:
            records: list[Any] = [example_mce()]
        else:
            try:
                data = json.loads(args.file.read_text("utf-8"))
            except OSError as exc:
                raise UsageError(f"Cannot read {args.file}: {exc.strerror}") from exc
            except json.JSONDecodeError as exc:
                raise UsageError(f"{args.file} is not valid JSON: {exc}") from exc
            items = data if isinstance(data, list) else [data]
            definition = mce_definition()
            records = [from_json(item, definition) for item in items]
        _print_receipts(ws.emit(records if len(records) > 1 else records[0]))


def _cmd_replay(args: argparse.Namespace) -> None:
    import io

    import pyarrow.parquet as pq

    from metaverse_kit._files import atomic_write

    out: Path = args.out
    if out.suffix.lower() != ".parquet":
        raise UsageError(f"--out must name a .parquet file, not {out}")
    with _connect(args) as ws:
        table = ws.replay(args.since, args.until, args.partition)

        buf = io.BytesIO()
        pq.write_table(table, buf)
        # NOTE: written whole and moved into place, so a failed run never leaves half a file.
        atomic_write(out, buf.getvalue())
        print(f"Wrote {table.num_rows} events to {out}")


def _cmd_tail(args: argparse.Namespace) -> None:
    from metaverse_kit.history.tail import event_lines

    with (
        _connect(args) as ws,
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


def _cmd_app(args: argparse.Namespace) -> None:
    from metaverse_kit.app import AppServer, app_command, new_token, serve
    from metaverse_kit.config import app_planner, default_workspace_path

    workspace = Path(args.workspace) if args.workspace else default_workspace_path()
    server = AppServer(
        port=args.port,
        token=args.token or new_token(),
        workspace=workspace.resolve(),
        planner=args.planner or app_planner(),
        theme=args.theme,
    )
    app_command(server)  # NOTE: checks Voila and the options before anything is printed
    with _connect(args) as ws:
        print(f"Steward app for {ws!r}", flush=True)
    print(f"Open {server.url}  (127.0.0.1 only; Ctrl-C stops)", flush=True)
    status = serve(server)
    if status > 0:  # NOTE: negative: Voila was stopped by a signal, as asked
        raise UsageError(f"Voila exited with status {status}; its messages are above")


def _cmd_doctor(args: argparse.Namespace) -> None:
    from metaverse_kit.config import default_backend
    from metaverse_kit.workspace import connect

    if default_backend(workspace=args.workspace) != "azure":
        raise UsageError(
            "this checks an Azure workspace and this one is local: set METAVERSE_BACKEND=azure "
            '(or backend = "azure" in config.toml) and the [azure] settings'
        )
    import logging

    from metaverse_kit.backends.azure.doctor import diagnose, format_findings
    from metaverse_kit.backends.azure.factory import LazyDefaultCredential

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


_COMMANDS = {
    "init": _cmd_init,
    "demo": _cmd_demo,
    "schemas": _cmd_schemas,
    "emit": _cmd_emit,
    "replay": _cmd_replay,
    "tail": _cmd_tail,
    "doctor": _cmd_doctor,
    "app": _cmd_app,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage line
        return 0 if exc.code == 0 else 2
    try:
        _COMMANDS[args.command](args)
    except MetaverseError as exc:
        message = " ".join(line.strip() for line in str(exc).strip().splitlines())
        print(f"metaverse {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head and closed early: not an error
        sys.stderr.close()
        return 0
    except Exception:  # anything unexpected keeps its traceback, for a bug report
        import traceback

        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
