"""Masking of secrets in text: connection strings, SAS signatures, account keys, bearer tokens.

Everything metaverse-kit prints, logs or puts in an exception message about a connection goes
through :func:`redact` first, so that a notebook shared with a colleague, a log file or a
traceback never carries a credential. What is masked:

- ``SharedAccessKey=...`` and ``AccountKey=...`` in connection strings (and any ``...Key=``);
- ``SharedAccessSignature=...`` and SAS query parameters: ``sig=``, ``signature=``;
- ``Authorization: Bearer ...`` headers, ``access_token``/``refresh_token``/``token`` values;
- JSON Web Tokens (``eyJ...``) wherever they appear.

The names, endpoints and entity paths stay readable, so a message still says *where* it failed.
"""

from __future__ import annotations

import logging
import re

__all__ = ["MASK", "RedactingFilter", "get_logger", "redact"]

#: What a secret is replaced with.
MASK = "***"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Connection string parts: SharedAccessKey=..., AccountKey=..., SharedAccessSignature=...
    (
        re.compile(
            r"(?i)\b((?:SharedAccessKey|AccountKey|AccessKey|PrimaryKey|SecondaryKey|SharedAccessSignature)"
            r"\s*=\s*)"
            r"([^;\s\"']+)"
        ),
        r"\1" + MASK,
    ),
    # SAS query parameters in URLs and tokens.
    (re.compile(r"(?i)(\b(?:sig|signature)=)([^&;\s\"']+)"), r"\1" + MASK),
    # Bearer and SharedAccessSignature authorization values.
    (re.compile(r"(?i)(\bBearer\s+)([A-Za-z0-9\-._~+/=]+)"), r"\1" + MASK),
    # token fields in JSON or key=value text.
    (
        re.compile(
            r"(?i)([\"']?\b(?:access_token|refresh_token|id_token|sas_token|token|client_secret|password)"
            r"[\"']?\s*[:=]\s*[\"']?)([^\"'&;,\s}]+)"
        ),
        r"\1" + MASK,
    ),
    # JSON Web Tokens anywhere.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), MASK),
]


def redact(text: object) -> str:
    """``str(text)`` with every secret it contains replaced by ``***``.

    Never raises: anything that is not text is converted with ``str()`` first.
    """
    out = str(text)
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in a record's message before any handler sees it.

    metaverse-kit attaches one to its own ``metaverse_kit`` logger; add one to a handler to
    protect other loggers too: ``handler.addFilter(RedactingFilter())``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted form; always keeps the record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


def get_logger(name: str) -> logging.Logger:
    """The logger ``name`` with a :class:`RedactingFilter` attached (once).

    Filters of a parent logger do not apply to its children's records, so every module of
    metaverse-kit that logs takes its logger from here.
    """
    log = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in log.filters):
        log.addFilter(RedactingFilter())
    return log
