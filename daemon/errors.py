"""Turning low-level errors into the one clear reason an operator reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def os_reason(exc: OSError) -> str:
    """The most specific reason for a failed socket operation, in lower case
    ("connection refused"). trio reports a failed TCP connect as one OSError
    ("all attempts to connect ... failed") whose cause groups the error of
    each address tried: the first of those is the reason."""
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.rsplit(": ", 1)[-1].lower()
    return (exc.strerror or str(exc)).lower()


@contextlib.contextmanager
def naming(what: str, where: str) -> Iterator[None]:
    """An OSError raised inside names the socket it is about: "control API
    127.0.0.1:7373: Address already in use", not just the reason."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"{what} {where}: {exc.strerror or exc}") from exc
