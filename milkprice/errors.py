"""Every error the system raises on purpose, and the one mapping from an error to an answer.

Each class carries its HTTP status and whether trying again can help (``retryable``): an
entry point answers with :func:`to_response`, and the storage trigger asks for a redelivery
only when a retry can help, so a deterministic failure is not redelivered forever.
"""

from __future__ import annotations

from typing import Any


class MilkPriceError(Exception):
    """An error meant for the caller: a status, a message and optional details."""

    status: int = 500
    retryable: bool = False  # would the same call, made again later, succeed?

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(MilkPriceError):
    """A setting has a value that cannot be used."""

    status = 500


class BadRequest(MilkPriceError):
    status = 400


class Unauthorized(MilkPriceError):
    status = 401


class Forbidden(MilkPriceError):
    """Understood, and refused whoever asks: what is asked is not this server's to do."""

    status = 403


class NotFound(MilkPriceError):
    status = 404


class MethodNotAllowed(MilkPriceError):
    status = 405


class Conflict(MilkPriceError):
    """Someone else changed what we meant to change (a generation precondition failed)."""

    status = 409


class RequestTimeout(MilkPriceError):
    status = 408
    retryable = True


class PayloadTooLarge(MilkPriceError):
    status = 413


class UnsupportedMediaType(MilkPriceError):
    status = 415


class DataError(MilkPriceError):
    """Raw data that cannot be trained on. The message names file, column and row."""

    status = 422

    def __init__(
        self,
        file: str,
        problem: str,
        *,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        where = [f"file {file}"]
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        detail: dict[str, Any] = {"file": file, "problem": problem}
        if column is not None:
            detail["field"] = column
        if row is not None:
            detail["row"] = row
        super().__init__(f"{', '.join(where)}: {problem}", [detail])
        self.file, self.column, self.row, self.problem = file, column, row, problem


class NotReady(MilkPriceError):
    """No model has been promoted yet, or storage is unreachable."""

    status = 503
    retryable = True

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StorageUnavailable(MilkPriceError):
    status = 503
    retryable = True


class Contended(MilkPriceError):
    """Others kept changing what we meant to read or change, try after try: a later call,
    once they are done, may succeed."""

    status = 503
    retryable = True


class ContractError(MilkPriceError):
    """An object in the bucket does not match the contract (pointer, manifest, run record)."""

    status = 500


class LoadError(MilkPriceError):
    """A model version that cannot be served as it is in the bucket (not a storage outage)."""

    status = 503


class ExportError(MilkPriceError):
    """An exported model disagrees with the fitted one: the same data would fail again."""

    status = 500


class StackError(MilkPriceError):
    """Something stops the local stack from starting; the message says what to do."""

    status = 500


def retryable(exc: BaseException) -> bool:
    """Whether the failed call may succeed when made again: only errors known to be transient
    (storage away, a timeout, a connection dropped below the store's own wrapping). An
    unexpected error is a bug: made again, it fails again, so an event that met one is
    acknowledged and its record keeps the error, rather than retrained on every redelivery."""
    if isinstance(exc, MilkPriceError):
        return exc.retryable
    return isinstance(exc, (ConnectionError, TimeoutError))


def to_response(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers for any exception; unknown ones become a bare 500."""
    if isinstance(exc, MilkPriceError):
        return exc.status, exc.to_dict(), dict(exc.headers)
    return 500, {"error": "internal error"}, {}
