"""What a backend's doctor reports: findings with a severity, a message and the fix.

``metaverse doctor`` asks the backend's doctor (``backends/local/doctor.py``; an Azure one
would live in ``backends/azure/doctor.py``) to :meth:`~Doctor.check` and, with ``--repair``,
to :meth:`~Doctor.repair`. Both speak only in the :class:`Finding` shape defined here, so the
command, a notebook or a test prints and judges any backend's findings the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["SEVERITIES", "Doctor", "Finding"]

#: ``error``: events are unreadable or at risk; ``warning``: something needs attention but
#: nothing is lost; ``info``: worth knowing (a live writer's temporary file, say).
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One thing a doctor found: how bad it is, what it is, and how to fix it.

    ``kind`` is a short stable name (``damaged-file``, ``leftover``, ``owner-only``,
    ``stuck-journal``, ``outbox``, ``state``) for scripts; ``path`` the file or folder it is
    about, when there is one; ``repairable`` whether the doctor's ``repair`` fixes it (else
    ``fix`` says who does).
    """

    severity: str
    kind: str
    message: str
    fix: str
    path: str | None = None
    repairable: bool = False

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}\n  fix: {self.fix}"


@runtime_checkable
class Doctor(Protocol):
    """Checks a backend's storage for damage and crash leftovers, and repairs what it can."""

    def check(self) -> list[Finding]:
        """Everything found, most severe first; reads only (works on a read-only workspace)."""
        ...

    def repair(self) -> list[str]:
        """Fix every repairable finding; one line per action taken.

        Raises ``ReadOnlyWorkspaceError`` when the storage cannot be written.
        """
        ...
