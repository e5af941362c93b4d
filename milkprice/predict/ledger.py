"""The forecast ledger as the predict function serves it: read, never computed.

Training writes ``ledger/forecasts.json`` (figures and drift included); here it is read on
first use and its version token checked again at most every ``reload_seconds``, as the
pointer is, but on its own: a run that promotes nothing may still score forecasts, so the
pointer's token does not say when the ledger changed. A failed check keeps what was read; with
nothing read yet it is a 503. Before any ledger exists the answer is an empty one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from milkprice import contract
from milkprice.errors import ContractError, MilkPriceError, NotReady
from milkprice.settings import Settings

CHECK_TIMEOUT = 1.0  # on the request path, as the pointer's check
HIDDEN = ("spans", "write_id", "schema")  # the ledger's own bookkeeping


def answer(doc: contract.Ledger) -> dict[str, Any]:
    """The /accuracy document of a ledger."""
    found = contract.to_builtins(doc)
    for name in HIDDEN:
        found.pop(name, None)
    found.setdefault("drift", {"state": "none"})
    for key in ("forecasts", "revisions", "horizons", "served"):
        found.setdefault(key, [])
    return dict(found)


class Ledgers:
    """The process's copy of the ledger and when to look at its token again."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = max(0.0, float(settings.reload_seconds))
        self._doc: Mapping[str, Any] | None = None
        self._token: str | None = None
        self._next = 0.0
        self._lock = threading.Lock()

    def current(self) -> Mapping[str, Any]:
        """The ledger's /accuracy document, read again only when its token moved."""
        doc = self._doc
        if doc is not None and time.monotonic() < self._next:
            return doc
        if not self._lock.acquire(blocking=doc is None):
            return doc  # type: ignore[return-value]  # another request is checking
        try:
            return self._check()
        finally:
            self._lock.release()

    def _check(self) -> Mapping[str, Any]:
        try:
            token = contract.ledger_token(self.settings, CHECK_TIMEOUT)
            if token is None:
                self._doc, self._token = MappingProxyType(answer(contract.Ledger())), None
            elif token != self._token or self._doc is None:
                found, self._token = self._read()  # the token of these very bytes
                self._doc = MappingProxyType(answer(found))
        except MilkPriceError as exc:
            if self._doc is None:
                raise NotReady(f"the forecast ledger cannot be read: {exc.message}") from None
        self._next = time.monotonic() + self.interval
        assert self._doc is not None
        return self._doc

    def _read(self) -> tuple[contract.Ledger, str | None]:
        try:
            return contract.read_ledger(self.settings)
        except ContractError as exc:  # until a training run writes it again
            raise NotReady(exc.message) from None
