"""``metaverse`` used as hurried users and scripts use it: pipes, full disks, devices, typos.

Most cases run the command in a subprocess: what is at stake (the exit status Python ends
with, what it writes at exit, whether stderr is a terminal) only shows there.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from metaverse_kit.cli import main
from tests.conftest import as_other_user

CLI = [sys.executable, "-m", "metaverse_kit.cli"]
MCE = "com.linkedin.pegasus2avro.mxe.MetadataChangeEvent"


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A workspace holding the sample history (over 20 Capture files: a replay shows a bar)."""
    home = tmp_path / "ws"
    assert main(["--workspace", str(home), "init", "--sample"]) == 0
    assert len(list((home / "lake").rglob("*.avro"))) > 20
    return home


def cli(*argv: str | bytes, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """``metaverse argv`` in a subprocess, stdout and stderr captured unless given."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("timeout", 120)
    return subprocess.run([*CLI, *argv], check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_no_progress_bar_when_stderr_is_not_a_terminal(sample: Path, tmp_path: Path) -> None:
    result = cli("--workspace", str(sample), "replay", "--out", str(tmp_path / "h.parquet"))
    assert result.returncode == 0, result.stderr
    # NOTE: a bar in a log is lines of carriage returns ("replay:  2%|...").
    assert result.stderr == b""
    assert result.stdout.startswith(b"Wrote ")


def test_ingest_shows_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL);")
    conn.close()
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(
        f"pipeline_name: shop\nsource:\n  type: sql\n  config:\n    url: sqlite:///{db}\n"
    )
    result = cli("--workspace", str(tmp_path / "ws"), "ingest", str(recipe))
    assert result.returncode == 0, result.stderr
    assert b"\r" not in result.stderr and b"%|" not in result.stderr
    assert b"events: 1 emitted" in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["schemas", "list"],  # a few lines: written when Python exits, after the status
        ["schemas", "show", MCE],  # 190 kB: fails while printing
        ["--help"],  # argparse ignored the error and exited 0
    ],
)
def test_output_to_a_full_disk_is_one_line_about_the_output(sample: Path, argv: list[str]) -> None:
    with open("/dev/full", "wb") as full:
        result = cli("--workspace", str(sample), *argv, stdout=full)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Cannot write the output (standard output): no space left on device" in err
    # NOTE: it was "Cannot use the workspace ...: the disk is full", which it was not.
    assert "workspace" not in err


def test_output_into_a_pipe_closed_early_is_quiet(sample: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        result = cli("--workspace", str(sample), "schemas", "show", MCE, stdout=write)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (0, b"")


def test_stdout_closed_still_runs_the_command(sample: Path) -> None:
    result = cli("--workspace", str(sample), "emit", "--example", stdout=subprocess.DEVNULL)
    assert result.returncode == 0
    closed = subprocess.run(
        [*CLI, "--workspace", str(sample), "emit", "--example"],
        stderr=subprocess.PIPE,
        timeout=120,
        check=False,
        preexec_fn=lambda: os.close(1),
    )
    assert (closed.returncode, closed.stderr) == (0, b"")


def test_a_file_name_that_is_not_utf8_is_printed_on_a_strict_utf8_stdout(
    sample: Path, tmp_path: Path
) -> None:
    out = os.fsencode(tmp_path) + b"/h\xff.parquet"
    # NOTE: PYTHONIOENCODING=utf-8 gives stdout the strict errors of a en_US.UTF-8 locale.
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = cli("--workspace", str(sample), "replay", "--out", out, env=env)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.rstrip().endswith(b"/h\\udcff.parquet")
    assert os.path.exists(out)


@pytest.mark.parametrize("argv", [["emit", "--file", "/dev/zero"], ["ingest", "/dev/zero"]])
def test_a_device_as_input_is_refused_instead_of_read_forever(
    tmp_path: Path, argv: list[str]
) -> None:
    result = cli("--workspace", str(tmp_path / "ws"), *argv, timeout=60)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "/dev/zero is a device, not a file" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ws").exists()


def test_an_input_folder_is_named_in_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--workspace", str(tmp_path / "ws"), "emit", "--file", str(tmp_path)]) == 2
    assert f"Cannot read the events file {tmp_path}: it is a folder" in capsys.readouterr().err


def test_replay_out_in_a_folder_you_cannot_write_names_out_not_the_workspace(
    sample: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = subprocess.run(
            as_other_user(
                [*CLI, "--workspace", str(sample), "replay", "--out", str(folder / "h.parquet")]
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        folder.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"metaverse replay: error: Cannot write --out {folder / 'h.parquet'}: permission "
        "denied; choose a folder you can write, with room for the file\n"
    )
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["replya"], "(did you mean 'replay'?); see 'metaverse --help'"),
        (["schemas", "lst"], "(did you mean 'list'?)"),
        (["app", "--theme", "drk"], "(did you mean 'dark'?)"),
        # A mistyped required option was reported as the required one missing.
        (["replay", "--ot", "h.parquet"], "unrecognized arguments: --ot (did you mean --out?)"),
        (["emit", "--exmple"], "unrecognized arguments: --exmple (did you mean --example?)"),
        (["init", "--sampel"], "unrecognized arguments: --sampel (did you mean --sample?)"),
        (["--wrkspace", "w", "init"], "--wrkspace (did you mean --workspace?)"),
    ],
)
def test_typos_get_a_suggestion(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert expected in err


def test_no_suggestion_when_nothing_is_close(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus;" in err and "did you mean" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["replay", "--out", "h.parquet", "--since", "yesterday"],
            "argument --since: give an ISO 8601 time such as 2026-01-31T12:00:00Z, not 'yesterday'",
        ),
        (["replay", "--out", "h.parquet", "--until", "2026-13-01"], "argument --until: give"),
        (
            ["tail", "--since", "now"],
            "argument --since: give 'latest', 'earliest', or an ISO 8601 time",
        ),
        (
            ["replay", "--out", "h.parquet", "--since", "2026-02-01", "--until", "2026-01-01"],
            "--since 2026-02-01 is after --until 2026-01-01: swap them",
        ),
    ],
)
def test_times_are_checked_under_the_option_s_name(
    sample: Path, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["--workspace", str(sample), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.splitlines()) == 1
    assert "start" not in err and "end (" not in err
