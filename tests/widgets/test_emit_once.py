"""One click, one emit: a double click's second click, and a click after a send that kept its
event in the outbox, send nothing again (EventComposer, BatchEmitter)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import pytest

import metaverse_kit as mk
from metaverse_kit._files import writing
from metaverse_kit.backends import load_backend
from metaverse_kit.backends.protocols import OutgoingEvent, Receipt
from metaverse_kit.events import aspects as a
from metaverse_kit.widgets import BatchEmitter, EventComposer
from metaverse_kit.widgets._common import click_once

ORDERS = mk.make_dataset_urn("hive", "sales.orders")


def double_click(button: W.Button) -> None:
    """What ipywidgets does with a double click's two 'click' messages, one after the other."""
    # NOTE: ipywidgets' own handler: it does not look at ``disabled``, as the kernel does not.
    button._handle_button_msg(None, {"event": "click"}, [])
    button._handle_button_msg(None, {"event": "click"}, [])


class ReadOnlyLakeHub:
    """Wraps a hub whose lake folder refuses every write, as a read-only mount does."""

    def __init__(self, hub: Any, folder: Path) -> None:
        self.hub = hub
        self.folder = folder
        self.namespace = hub.namespace
        self.name = hub.name

    def partition_ids(self) -> list[str]:
        return self.hub.partition_ids()

    def send(self, events: Sequence[OutgoingEvent], *, schema_ids: Sequence[str]) -> list[Receipt]:
        import errno

        with writing(self.folder):
            raise OSError(errno.EROFS, "Read-only file system")

    def close(self) -> None:
        self.hub.close()


@pytest.fixture
def readonly_lake(tmp_path: Path, clock: Any) -> Iterator[mk.Workspace]:
    parts = load_backend("local").create(path=tmp_path / "ro", clock=clock)
    hub = ReadOnlyLakeHub(parts.hub, tmp_path / "ro" / "lake")
    with mk.Workspace(dataclasses.replace(parts, hub=hub)) as ws:
        yield ws


def test_click_once_ignores_clicks_while_running_and_on_a_disabled_button() -> None:
    button = W.Button()
    calls: list[bool] = []

    def action() -> None:
        calls.append(button.disabled)
        button.click()  # a click arriving while the action runs

    click_once(button, action, ready=lambda: len(calls) < 2)
    button.click()
    assert calls == [True] and not button.disabled
    button.click()
    assert calls == [True, True] and button.disabled  # ready() said no
    button.click()
    assert len(calls) == 2


def test_a_double_click_on_the_composer_emits_once(workspace: mk.Workspace) -> None:
    composer = EventComposer(workspace, value=a.mce(ORDERS, [a.global_tags(["PII"])]))
    double_click(composer.emit_button)
    assert workspace.replay(progress=False).num_rows == 1
    assert composer.emit_button.disabled and "until the form changes" in composer.status.value
    # A changed form is a new event: Emit is on again.
    composer.value = a.mce(ORDERS, [a.global_tags(["PII", "Gold"])])
    assert not composer.emit_button.disabled
    composer.emit_button.click()
    assert workspace.replay(progress=False).num_rows == 2


def test_a_double_click_on_the_batch_emits_once(workspace: mk.Workspace) -> None:
    rows = [a.mce(mk.make_dataset_urn("hive", f"db.t{i}"), [a.status(False)]) for i in range(3)]
    batch = BatchEmitter(workspace, rows)
    double_click(batch.emit_button)
    assert workspace.replay(progress=False).num_rows == 3
    assert batch.emit_button.disabled
    batch.check_button.click()  # checking the rows again is asking to send them again
    assert not batch.emit_button.disabled


def test_an_event_kept_in_the_outbox_is_said_and_not_emitted_twice(
    readonly_lake: mk.Workspace,
) -> None:
    composer = EventComposer(readonly_lake, value=a.mce(ORDERS, [a.global_tags(["PII"])]))
    composer.emit_button.click()
    status = composer.status.value
    assert "Not emitted" in status and "Cannot write in" in status
    assert "kept in the outbox: ws.outbox.retry() sends it" in status
    assert "emitting again would send it twice" in status
    # Only the lake refused: the message does not call the whole workspace read-only.
    assert "this workspace is read-only for you;" not in status
    assert "read-only for you in that folder" in status
    assert len(readonly_lake.outbox.list()) == 1
    composer.emit_button.click()  # the steward clicks again
    assert len(readonly_lake.outbox.list()) == 1


def test_a_refused_send_kept_in_the_outbox_says_so(flaky_workspace: mk.Workspace) -> None:
    record = a.mce(mk.make_dataset_urn("hive", "refuse.me"), [a.global_tags(["PII"])])
    composer = EventComposer(flaky_workspace, value=record)
    composer.emit_button.click()
    assert "emitting again would send it twice" in composer.status.value
    assert composer.emit_button.disabled
    composer.emit_button.click()
    assert len(flaky_workspace.outbox.list()) == 1
