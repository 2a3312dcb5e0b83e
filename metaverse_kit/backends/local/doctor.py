"""The local workspace's doctor: damaged Capture files, crash leftovers, stuck journal, outbox.

``metaverse doctor`` runs :meth:`LocalDoctor.check`, which only reads (it works on a workspace
the user cannot write), and with ``--repair`` :meth:`LocalDoctor.repair`, which:

- rolls back a send a killed process left half done (the hub's stuck journal);
- rewrites each damaged Capture file from its intact blocks (those whose framing, sync marker
  and records all check out, including blocks after the damage, found again by their sync
  marker), after moving the damaged original aside to ``<workspace>/quarantine/`` under its
  path in the workspace; a file with no intact block is only moved aside;
- rebuilds an unreadable hub state from the lake;
- sets aside (to ``hub/journal.json.refused``) a hub journal the hub refuses, one naming a
  file outside the lake or not of the shape the hub writes, without acting on it;
- deletes the temporary files of dead processes (never a live writer's);
- gives files that versions before 2026-12-03 wrote ``0600`` whatever the umask (the mode of
  the temporary file they were written through) the mode the umask gives now, so a team that
  shares the workspace can read them.

A zero-byte Capture file is an empty archive, as replay reads it (the local lake does not
list it), not damage; one the hub state says it wrote events to is damage.

Outbox entries are reported, not repaired: ``ws.outbox.retry()`` sends them and
``ws.outbox.discard(ids)`` drops them. A batch a live process is sending right now (it holds
the batch's lock, see :meth:`~metaverse_kit.outbox.Outbox.sending`) is only noted. Findings
use the shape of :mod:`metaverse_kit.backends.health`, which an Azure doctor reuses.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from metaverse_kit._files import (
    Leftover,
    atomic_write,
    file_mode,
    find_leftovers,
    remove_leftovers,
)
from metaverse_kit.backends.health import SEVERITIES, Finding
from metaverse_kit.backends.local.factory import existing_settings
from metaverse_kit.backends.local.hub import LocalEventHub
from metaverse_kit.backends.local.lake import LocalLake
from metaverse_kit.capture import BlockScan, decode_block, read_header, scan_blocks
from metaverse_kit.errors import CaptureFileError, ConfigurationError

__all__ = ["LocalDoctor"]

#: Top-level folders of a workspace the doctor leaves alone: the replay cache keeps and cleans
#: its own files, and the quarantine holds what a repair set aside.
_SKIP = ("cache", "quarantine")


@dataclass(frozen=True)
class _Damage:
    """What is wrong with one Capture file, and what of it can be kept."""

    path: Path
    header: bytes  # empty when the header itself is unreadable
    intact: list[tuple[int, int, int]]  # (start, end, records) of the blocks kept
    blocks: int  # blocks found, intact or not
    lost_bytes: int
    reason: str
    torn_only: bool  # nothing wrong but a block cut short at the end

    @property
    def kept(self) -> int:
        return sum(n for _, _, n in self.intact)


class LocalDoctor:
    """Checks and repairs the local workspace at ``path`` (a folder with ``workspace.json``).

    Raises :class:`ConfigurationError` when ``path`` holds no workspace.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path).expanduser()
        settings = existing_settings(self.root)
        self.hub = LocalEventHub(
            self.root / "lake",
            self.root / "hub",
            namespace=settings["namespace"],
            eventhub=settings["eventhub"],
            partition_count=settings["partition_count"],
            window_seconds=settings["window_seconds"],
            codec=settings["codec"],
        )
        self.quarantine = self.root / "quarantine"
        #: Where a repair sets aside a hub journal the hub refuses.
        self.refused_journal = self.hub.journal_path.with_name("journal.json.refused")

    def __repr__(self) -> str:
        return f"LocalDoctor({str(self.root)!r})"

    # -- checking -----------------------------------------------------------------------------

    def check(self) -> list[Finding]:
        """Everything found in the workspace, most severe first. Reads only."""
        findings: list[Finding] = []
        state = self._state(findings)
        journal = self._journal(findings)
        busy = self.hub.busy()
        current = {part.get("file") for part in state.values()}
        for damage in self._damaged(state):
            relative = damage.path.relative_to(self.hub.lake_root).as_posix()
            if damage.torn_only and (relative in journal or (busy and relative in current)):
                continue  # a send in progress, or the stuck journal's to roll back
            findings.append(
                Finding(
                    "error",
                    "damaged-file",
                    f"{damage.path} is damaged: {damage.reason}; {len(damage.intact)} of "
                    f"{damage.blocks} blocks are intact ({damage.kept} events), "
                    f"{damage.lost_bytes} bytes are unreadable",
                    "`metaverse doctor --repair` writes the intact blocks to a repaired file in "
                    f"its place and moves the damaged file to {self.quarantine}",
                    str(damage.path),
                    repairable=True,
                )
            )
        findings.extend(self._leftovers())
        findings.extend(self._owner_only())
        findings.extend(self._outbox())
        return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))

    def _state(self, findings: list[Finding]) -> dict[str, dict[str, Any]]:
        try:
            return self.hub.read_state()
        except ConfigurationError as exc:
            findings.append(
                Finding(
                    "error",
                    "state",
                    str(exc).rpartition("; ")[0],
                    "`metaverse doctor --repair` rebuilds it from the lake's files",
                    str(self.hub.state_path),
                    repairable=True,
                )
            )
            return {}

    def _journal(self, findings: list[Finding]) -> set[str]:
        """The files a stuck journal names (empty when there is none, or its send is live)."""
        try:
            journal = self.hub.pending()
        except ConfigurationError as exc:
            findings.append(
                Finding(
                    "error",
                    "stuck-journal",
                    str(exc).rpartition("; ")[0],
                    "nothing it names was touched: it is not this hub's to act on. Check what "
                    "wrote it; `metaverse doctor --repair` then sets it aside, to "
                    f"{self.refused_journal} (sends are refused until then)",
                    str(self.hub.journal_path),
                    repairable=True,
                )
            )
            return set()
        if journal is None:
            return set()
        if self.hub.busy():
            return set()  # a send is writing right now: its journal is not stuck
        names = [e["path"] for e in journal.get("files", [])] or [
            final for _, final in journal.get("renames", [])
        ]
        findings.append(
            Finding(
                "warning",
                "stuck-journal",
                f"A send by process {journal.get('pid', '?')} was killed half done; the hub "
                f"journal {self.hub.journal_path} names {len(names)} file(s) to roll back to "
                "their last complete block",
                "`metaverse doctor --repair`, the next emit or opening the workspace rolls it back",
                str(self.hub.journal_path),
                repairable=True,
            )
        )
        return set(names)

    def _capture_files(self) -> list[Path]:
        """The lake's Capture files as a replay finds them, by path.

        NOTE: listed by the local lake, so that a file the replay reads as an empty archive
        (zero bytes) is not called damaged here: Capture-like tools write them.
        """
        lake = self.hub.lake_root
        if not lake.is_dir():
            return []
        return sorted(Path(file.path) for file in LocalLake(lake).list_files())

    def _damaged(self, state: dict[str, dict[str, Any]]) -> Iterator[_Damage]:
        lengths = {
            part["file"]: int(part["length"])
            for part in state.values()
            if "file" in part and "length" in part
        }
        for relative, written in sorted(lengths.items()):
            path = self.hub.lake_root / relative
            try:
                empty = path.stat().st_size == 0
            except FileNotFoundError:
                continue
            if empty:  # NOTE: not an empty archive: the hub wrote events to it, now cut off
                yield _Damage(
                    path,
                    b"",
                    [],
                    0,
                    written,
                    f"it is empty, but the hub wrote {written} bytes to it (they were cut off)",
                    torn_only=False,
                )
        for path in self._capture_files():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            relative = path.relative_to(self.hub.lake_root).as_posix()
            damage = _examine(path, data)
            expected = lengths.get(relative)
            if damage is None and expected is not None and len(data) < expected:
                _, _, start = read_header(data)
                scan = scan_blocks(data, start, read_header(data)[1])
                damage = _Damage(
                    path,
                    data[:start],
                    [(b.start, b.end, b.count) for b in scan.blocks],
                    len(scan.blocks),
                    expected - len(data),
                    f"it is {expected - len(data)} bytes shorter than the hub wrote it (its "
                    "last blocks were cut off)",
                    torn_only=False,
                )
            if damage is not None:
                yield damage

    def _leftovers(self) -> list[Finding]:
        out = []
        for leftover in find_leftovers(self.root, skip=_SKIP):
            if leftover.alive:
                out.append(
                    Finding(
                        "info",
                        "leftover",
                        f"{leftover.path} is being written by a live process"
                        + (f" ({leftover.pid})" if leftover.pid else ""),
                        "nothing to do: it goes away when that write ends",
                        str(leftover.path),
                    )
                )
            else:
                out.append(
                    Finding(
                        "warning",
                        "leftover",
                        f"{leftover.path} ({_size(leftover)}) was left by a killed process"
                        + (f" ({leftover.pid})" if leftover.pid else ""),
                        "`metaverse doctor --repair` or opening the workspace deletes it",
                        str(leftover.path),
                        repairable=True,
                    )
                )
        return out

    def _owner_only(self) -> list[Finding]:
        paths = _owner_only(self.root)
        if not paths:
            return []
        return [
            Finding(
                "warning",
                "owner-only",
                f"{len(paths)} file(s) in {self.root} can be read by their owner alone (mode "
                f"0600, e.g. {paths[0]}): metaverse-kit before 2026-12-03 wrote every file "
                "0600 whatever the umask, so others who share the workspace cannot read them",
                f"`metaverse doctor --repair` gives them the mode your umask gives new files "
                f"({file_mode():04o})",
                str(paths[0]),
                repairable=True,
            )
        ]

    def _outbox(self) -> list[Finding]:
        from metaverse_kit.outbox import Outbox

        outbox = Outbox(self.root / "outbox", self.hub)
        try:
            entries = outbox.list()
        except ConfigurationError as exc:
            return [
                Finding(
                    "error",
                    "outbox",
                    str(exc),
                    "inspect the file by hand; ws.outbox.list() reads the others once it is gone",
                    str(outbox.folder),
                )
            ]
        batches: dict[str, list[Any]] = {}
        for entry in entries:
            batches.setdefault(entry.batch, []).append(entry)
        out = []
        for batch, waiting in batches.items():
            path = outbox.folder / f"{batch}.json"
            emitted = (
                f"{len(waiting)} event(s) emitted at {waiting[0].created:%Y-%m-%d %H:%M:%S} UTC"
            )
            if outbox.sending(batch):
                out.append(
                    Finding(
                        "info",
                        "outbox",
                        f"{emitted} are being sent by a live process ({path})",
                        "nothing to do: they leave the outbox when the hub takes them",
                        str(path),
                    )
                )
                continue
            if not path.exists():
                continue  # NOTE: sent between the listing and the lock's check: its holder is gone
            error = waiting[0].last_error
            if error and not waiting[0].unconfirmed:
                message = f"{emitted} wait in the outbox ({path}); last error: {error}"
            else:
                # NOTE: the outbox cannot tell how far a killed send got: its complete blocks
                # are in the lake (the hub's journal keeps them), the rest is not.
                message = (
                    f"{emitted} wait in the outbox ({path}), not confirmed sent: the process "
                    "sending them ended before the hub's receipt (killed?), so some may already "
                    "be in the lake"
                )
            out.append(
                Finding(
                    "warning",
                    "outbox",
                    message,
                    "ws.outbox.retry() sends them again (replay drops a retry's copies of those "
                    "already in the lake as duplicates); ws.outbox.discard(message_ids) drops them",
                    str(path),
                )
            )
        return out

    # -- repairing ----------------------------------------------------------------------------

    def repair(self) -> list[str]:
        """Fix every repairable finding; one line per action (see the module docstring).

        Holds the hub's lock throughout, so no emit writes meanwhile. Raises
        :class:`ReadOnlyWorkspaceError` when the workspace cannot be written.
        """
        actions: list[str] = []
        with self.hub.exclusive():
            try:
                self.hub.read_state()
            except ConfigurationError:
                broken = self.hub.state_path.with_name("partitions.json.unreadable")
                os.replace(self.hub.state_path, broken)
                actions.append(f"moved the unreadable hub state to {broken}")
                actions.extend(self.hub.rebuild_state())
            try:
                stuck = self.hub.pending() is not None
            except ConfigurationError:
                # NOTE: set aside whole, never acted on; the files it names are checked before
                # the next append like any other, as after a journal that does not parse.
                os.replace(self.hub.journal_path, self.refused_journal)
                actions.append(
                    f"moved the hub journal the hub refuses to {self.refused_journal}; nothing "
                    "it names was touched"
                )
                stuck = False
            if stuck:
                done = self.hub.recover(hold_lock=False)
                actions.extend(done or ["cleared the stuck hub journal (nothing to roll back)"])
            for damage in self._damaged(self.hub.read_state()):
                actions.append(self._repair(damage))
        actions.extend(
            f"deleted {leftover.path} ({_size(leftover)}), left by a killed process"
            for leftover in remove_leftovers(self.root, skip=_SKIP)
        )
        opened = _owner_only(self.root)
        mode = file_mode()
        for path in opened:
            os.chmod(path, mode)
        if opened:
            actions.append(f"set {len(opened)} owner-only file(s) to mode {mode:04o}")
        return actions

    def _repair(self, damage: _Damage) -> str:
        relative = damage.path.relative_to(self.root)
        aside = self.quarantine / relative
        n = 0
        while aside.exists():
            n += 1
            aside = self.quarantine / relative.with_name(f"{relative.name}.{n}")
        aside.parent.mkdir(parents=True, exist_ok=True)
        data = damage.path.read_bytes()
        # NOTE: linked aside first, then replaced: at every moment the damaged bytes are under
        # one name or the other, and a repair interrupted half way is simply run again.
        try:
            os.link(damage.path, aside)
        except OSError:
            shutil.copy2(damage.path, aside)
        lake_relative = damage.path.relative_to(self.hub.lake_root).as_posix()
        if damage.header:
            repaired = damage.header + b"".join(data[s:e] for s, e, _ in damage.intact)
            atomic_write(damage.path, repaired)
            self.hub.file_rewritten(lake_relative)
            return (
                f"repaired {damage.path}: kept {len(damage.intact)} intact blocks "
                f"({damage.kept} events); the damaged file is in {aside}"
            )
        damage.path.unlink()
        self.hub.file_rewritten(lake_relative)
        return f"moved {damage.path} to {aside}: nothing in it was readable"


def _owner_only(root: Path) -> list[Path]:
    """The files under ``root`` left ``0600`` by the versions that wrote every file so, when the
    umask now gives others more (none under ``umask 077``, which asks for ``0600``).

    Temporary files (named with a leading dot) and symbolic links are not counted; only files
    this user owns, the ones ``chmod`` can change.
    """
    if file_mode() & 0o077 == 0:
        return []
    uid = os.geteuid()
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            regular = stat.S_ISREG(info.st_mode) and info.st_uid == uid
            if regular and stat.S_IMODE(info.st_mode) == 0o600:
                found.append(path)
    return sorted(found)


def _size(leftover: Leftover) -> str:
    size = float(leftover.size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return ""  # pragma: no cover


def _examine(path: Path, data: bytes) -> _Damage | None:
    """What is wrong with one Capture file's bytes, or None when every block is intact."""
    try:
        meta, sync, start = read_header(data, where=str(path))
        schema = fastavro.parse_schema(json.loads(meta["avro.schema"]))
        codec = meta.get("avro.codec", b"null").decode()
    except (CaptureFileError, KeyError, ValueError, TypeError) as exc:
        reason = (
            str(exc).replace(f"{path} ", "it ", 1)
            if isinstance(exc, CaptureFileError)
            else (f"its header has no usable schema ({exc})")
        )
        return _Damage(path, b"", [], 0, len(data), reason, torn_only=False)
    scan = scan_blocks(data, start, sync, resync=True)
    intact, bad = [], 0
    for block in scan.blocks:
        try:
            decode_block(data, block, codec=codec, schema=schema)
        except CaptureFileError:
            bad += 1
            continue
        intact.append((block.start, block.end, block.count))
    if not scan.damaged and not bad:
        return None
    lost = sum(e - s for s, e in scan.damaged) + sum(
        b.end - b.start for b in scan.blocks if (b.start, b.end, b.count) not in intact
    )
    return _Damage(
        path,
        data[:start],
        intact,
        len(scan.blocks) + len(scan.damaged),
        lost,
        _reason(scan, bad),
        torn_only=scan.tail == "torn" and len(scan.damaged) == 1 and not bad,
    )


def _reason(scan: BlockScan, bad: int) -> str:
    parts = []
    if scan.tail == "torn" and len(scan.damaged) == 1:
        parts.append("it ends in a block cut short (a write that was killed)")
    elif scan.damaged:
        parts.append(f"{len(scan.damaged)} stretch(es) of bytes are no block")
    if bad:
        parts.append(f"{bad} block(s) do not decode")
    return " and ".join(parts)
