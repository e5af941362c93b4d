"""One error base class that carries an HTTP status; ``to_response`` is the only mapping."""

from __future__ import annotations

from typing import Any


class MilkPriceError(Exception):
    """An error meant for the caller: a status, a message and optional details."""

    status: int = 500

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


class NotFound(MilkPriceError):
    status = 404


class MethodNotAllowed(MilkPriceError):
    status = 405


class Conflict(MilkPriceError):
    """Someone else changed what we meant to change (a generation precondition failed)."""

    status = 409


class RequestTimeout(MilkPriceError):
    status = 408


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

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StorageUnavailable(MilkPriceError):
    status = 503


def to_response(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers for any exception; unknown ones become a bare 500."""
    if isinstance(exc, MilkPriceError):
        return exc.status, exc.to_dict(), dict(exc.headers)
    return 500, {"error": "internal error"}, {}
