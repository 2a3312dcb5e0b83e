"""metaverse-kit's warnings: given on the user's line, or handed to a widget that shows them."""

from __future__ import annotations

import threading
import warnings

import pytest

import metaverse_kit as mk
from metaverse_kit.errors import warn, warnings_to


def _warn_from_the_package() -> None:
    # NOTE: called as if from inside the package, the way every warning of it is given.
    warn(mk.LateEventWarning("late"))


def test_a_warning_names_the_users_line() -> None:
    with pytest.warns(mk.LateEventWarning, match="late") as caught:
        warn(mk.LateEventWarning("late"))
    assert caught[0].filename == __file__


def test_warnings_to_takes_them_from_python_and_nests() -> None:
    outer: list[mk.MetaverseWarning] = []
    inner: list[mk.MetaverseWarning] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with warnings_to(outer.append):
            warn(mk.MissingPartitionWarning("a"))
            with warnings_to(inner.append):
                warn(mk.DamagedFileWarning("b"))
            warn(mk.CaptureFileWarning("c"))
    assert [str(w) for w in outer] == ["a", "c"] and [str(w) for w in inner] == ["b"]
    with pytest.warns(mk.LateEventWarning):  # the block is over: Python's again
        warn(mk.LateEventWarning("d"))


def test_a_handler_belongs_to_its_thread() -> None:
    """Another thread's warnings (the notebook's, a second widget's) are not taken."""
    mine: list[mk.MetaverseWarning] = []
    seen: list[str] = []
    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        ready.wait()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn(mk.LateEventWarning("from the other thread"))
        seen.extend(str(w.message) for w in caught)
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with warnings_to(mine.append):
        ready.set()
        done.wait(10)
        warn(mk.LateEventWarning("mine"))
    thread.join()
    assert [str(w) for w in mine] == ["mine"]
    assert seen == ["from the other thread"]


def test_every_warning_is_drawn_listed_and_exported() -> None:
    import metaverse_kit.errors as errors

    warning_classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type)
        and issubclass(c, mk.MetaverseWarning)
        and c is not mk.MetaverseWarning
    ]
    assert mk.UndecodedEventWarning in warning_classes
    assert mk.PartialHistoryWarning in warning_classes
    for c in warning_classes:
        assert f"── {c.__name__} " in (errors.__doc__ or ""), c.__name__
        assert c.__name__ in errors.__all__ and c.__name__ in mk.__all__, c.__name__
        assert getattr(mk, c.__name__) is c and c.__doc__
