"""Every error metaverse-kit raises, under one root.

::

    MetaverseError
    ├── ConfigurationError          connect() arguments, config files, unknown backends
    │   ├── MissingDependencyError  a backend's extra is not installed (message has the pip line)
    │   └── RecipeError             an ingestion recipe or source config (``ingest.config``)
    ├── RegistryError               the schema registry said no
    │   ├── SchemaNotFoundError     no schema with that id / group / name / version
    │   └── IncompatibleSchemaError a new version breaks the group's compatibility mode
    ├── SchemaParseError            a definition is not valid Avro
    ├── ValidationError             a record does not fit its schema, or cannot be sent
    ├── InvalidUrnError             a URN is malformed (defined in ``events.urns``)
    ├── UnknownAspectError          an aspect name no snapshot knows (defined in ``events.aspects``)
    ├── DecodeError                 a body cannot be decoded with the schema it names
    ├── CaptureFileError            a file is not a readable Event Hubs Capture archive
    ├── HistoryInputError           a history question got no events table or a bad time
    │   └── MissingColumnError      the events table lacks a column (``.column``; ``history``)
    ├── EmitError                   events could not be sent (``.failures`` per event)
    ├── ReadOnlyWorkspaceError      a write to a workspace folder this user cannot write
    ├── SourceUnreachableError      an ingestion source cannot be read at all (``ingest.source``)
    └── ServiceError                a backend service failed (translated from the SDK)
        └── TransientServiceError   ... in a way that may pass: throttled, connection lost

    MetaverseWarning (a UserWarning)
    ├── CaptureFileWarning          a replay with on_bad_file="skip" left damaged parts out
    ├── ChangedFileWarning          an export found a Capture file smaller than it exported
    ├── DamagedFileWarning          a damaged Capture file was set aside; events went to another
    ├── ImmutableReadWarning        a WAL-mode SQLite file was read without locks (immutable=1)
    ├── InterruptedSendWarning      a retry sent events a stopped process had begun to send
    ├── LateEventWarning            an event older than a write already in the lake was sent
    ├── MissingPartitionWarning     a replay's partitions= names one the lake has no file of
    ├── PartialHistoryWarning       a history question needs what came before its replay's start
    └── UndecodedEventWarning       a history question left out events that did not decode

Warnings are given by :func:`warn` (on the user's line), which a widget's work can route to the
widget with :func:`warnings_to`.

``TransientError`` is a mixin: ``isinstance(exc, TransientError)`` says that trying the same
call again later may succeed (throttling, a lost connection); every other error is terminal.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = [
    "CaptureFileError",
    "CaptureFileWarning",
    "ChangedFileWarning",
    "ConfigurationError",
    "DamagedFileWarning",
    "DecodeError",
    "EmitError",
    "FieldProblem",
    "ImmutableReadWarning",
    "IncompatibleSchemaError",
    "InterruptedSendWarning",
    "LateEventWarning",
    "MetaverseError",
    "MetaverseWarning",
    "MissingDependencyError",
    "MissingPartitionWarning",
    "PartialHistoryWarning",
    "ReadOnlyWorkspaceError",
    "RegistryError",
    "SchemaNotFoundError",
    "SchemaParseError",
    "ServiceError",
    "TransientError",
    "TransientServiceError",
    "UndecodedEventWarning",
    "ValidationError",
    "user_stacklevel",
    "warn",
    "warnings_to",
]


class MetaverseError(Exception):
    """Root of every error raised by metaverse-kit."""


class TransientError:
    """Mixin: the failure may go away if the same call is tried again later."""


class ConfigurationError(MetaverseError, ValueError):
    """The workspace or backend was configured wrongly; the message says which setting."""


class MissingDependencyError(ConfigurationError, ImportError):
    """A backend needs packages that are not installed; the message has the ``pip install`` line."""

    def __init__(self, what: str, packages: Sequence[str], *, extra: str | None = None) -> None:
        self.packages = list(packages)
        target = f'"metaverse-kit[{extra}]"' if extra else " ".join(self.packages)
        super().__init__(f"{what} needs {', '.join(self.packages)}: pip install {target}")


class RegistryError(MetaverseError):
    """The schema registry refused an operation."""


class SchemaNotFoundError(RegistryError, LookupError):
    """No schema matches the id, or the group, name and version, that were asked for."""


class IncompatibleSchemaError(RegistryError):
    """A new schema version breaks the compatibility mode of its group.

    ``breaking`` lists the fields (or types) that break it, each with the reason.
    """

    def __init__(self, message: str, *, breaking: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.breaking = list(breaking)


class SchemaParseError(MetaverseError, ValueError):
    """A schema definition is not valid JSON or not a valid Avro schema."""


@dataclass(frozen=True)
class FieldProblem:
    """One problem found in a record: where (a dotted path with ``[i]`` for items) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<record>'}: {self.message}"


class ValidationError(MetaverseError, ValueError):
    """A record does not fit its Avro schema, or an emit's events or arguments cannot be sent
    (larger than Event Hubs takes, a bad partition key or property). ``problems`` lists every
    problem with its path."""

    def __init__(self, problems: Sequence[FieldProblem], *, what: str = "record") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"The {what} has {count} problem{'s' if count != 1 else ''}:\n{lines}")


class DecodeError(MetaverseError, ValueError):
    """An event body could not be decoded with the schema its content type names."""


class CaptureFileError(MetaverseError, ValueError):
    """A file is not a readable Event Hubs Capture Avro archive; the message names the file."""


class EmitError(MetaverseError):
    """Some events could not be sent.

    ``failures`` holds ``(index, exception)`` pairs for the events that failed and ``receipts``
    the receipts of those that were sent, so nothing is lost silently.
    """

    def __init__(
        self,
        message: str,
        *,
        failures: Sequence[tuple[int, BaseException]] = (),
        receipts: Sequence[object] = (),
    ) -> None:
        super().__init__(message)
        self.failures = list(failures)
        self.receipts = list(receipts)


class ServiceError(MetaverseError):
    """A backend service failed; ``__cause__`` holds the SDK's own exception."""


class TransientServiceError(ServiceError, TransientError):
    """A backend service failed in a way that may pass (throttled, connection lost, timeout)."""


class ReadOnlyWorkspaceError(MetaverseError, PermissionError):
    """A write to a workspace folder this user cannot write; the message names the folder.

    Reading the same workspace (replay, schemas, the doctor without ``--repair``) works.
    """


class MetaverseWarning(UserWarning):
    """Root of the warnings metaverse-kit gives: something to look at, nothing lost."""


class CaptureFileWarning(MetaverseWarning):
    """A replay skipped damaged Capture files or blocks (``on_bad_file="skip"``); the message
    says how many, and ``metaverse_kit.skipped_files(table)`` lists them."""


class ChangedFileWarning(MetaverseWarning):
    """An export found Capture files smaller than when it exported them (repaired by
    ``metaverse doctor --repair``, or replaced) and read them again whole."""


class DamagedFileWarning(MetaverseWarning):
    """A damaged Capture file was passed over for a new one; ``metaverse doctor`` repairs it."""


class ImmutableReadWarning(MetaverseWarning):
    """A SQLite database in WAL mode, in a folder this user cannot write, was read with SQLite's
    ``immutable=1`` (no locks, the WAL ignored), the one way SQLite can read it there: the
    ingested snapshot may miss changes written meanwhile. The message names the file."""


class InterruptedSendWarning(MetaverseWarning):
    """``ws.outbox.retry()`` sent events again that a process had begun to send when it stopped
    (killed, a kernel restart) before the hub answered: the hub may have taken them then, so
    the lake may hold them twice, with the same message id. Replay keeps the first copy of each
    (``metaverse_kit.duplicates_dropped(table)`` counts the others), so history is the same;
    ``ws.replay(dedup=False)`` shows every copy. The message names the batches and events."""


class LateEventWarning(MetaverseWarning):
    """An event was sent after a newer write of the same aspect; history keeps the newer one."""


class MissingPartitionWarning(MetaverseWarning):
    """A replay's ``partitions=`` names a partition of which the lake has no Capture file (a
    mistyped id, or one that never had an event where Capture skips empty windows)."""


class PartialHistoryWarning(MetaverseWarning):
    """A history question (``changes``, ``state_as_of``) was asked of a replay that started
    after the lake's first events (``start=``): values written before the replay's start are
    unknown to it, so a first change in the table reads as ``added`` and older state is
    missing. Replay from earlier (or without ``start=``) for the whole answer."""


class UndecodedEventWarning(MetaverseWarning):
    """A history question left out events whose payload did not decode (``decode_error`` set):
    most often a replay without ``registry=`` (or ``schemas=``), which cannot resolve the
    schema ids of content types. The message says how many and the most common reason."""


def user_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the caller that names the first frame
    outside metaverse-kit: the user's line, whatever depth of the package warns.

    NOTE: a warning attributed to a line of ours shows once per session under Python's default
    filter; attributed to the user's line, once per line of theirs.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


_HANDLER: ContextVar[Callable[[MetaverseWarning], None] | None] = ContextVar(
    "metaverse_warning_handler", default=None
)


def warn(warning: MetaverseWarning) -> None:
    """Give one of metaverse-kit's warnings: to the handler of the innermost :func:`warnings_to`
    around this call, or else as a Python warning attributed to the user's line.

    Every warning of the package goes through here, so that a widget can show it where its user
    looks instead of on a background thread's stderr.
    """
    handler = _HANDLER.get()
    if handler is not None:
        handler(warning)
        return
    warnings.warn(warning, stacklevel=user_stacklevel())


@contextmanager
def warnings_to(handler: Callable[[MetaverseWarning], None]) -> Iterator[None]:
    """Hand the metaverse-kit warnings given inside the block to ``handler`` instead of Python.

    NOTE: a context variable rather than ``warnings.catch_warnings``, which swaps the process's
    filters and would take the warnings of every other thread too (the notebook's own, a second
    widget's). A thread starts with no handler, whatever the thread that started it had set.
    """
    token = _HANDLER.set(handler)
    try:
        yield
    finally:
        _HANDLER.reset(token)
