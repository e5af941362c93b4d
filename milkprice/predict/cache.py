"""The process's model cache: the snapshot being served, and when to reload it.

The cache is one immutable :class:`~milkprice.predict.snapshot.Loaded` snapshot, built lazily
on the first request and swapped atomically when the pointer in the bucket moves. The
pointer's version token is checked on the request path, at most once per
``settings.reload_seconds``, by one request at a time; the others keep serving meanwhile. A
reload that fails keeps the old snapshot serving; before any snapshot exists the answer is 503.
While storage fails the checks back off; a version that cannot be loaded is not tried again
until the pointer moves. This module holds the process's one cache (:func:`server`).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from milkprice import contract
from milkprice import settings as settings_module
from milkprice.errors import MilkPriceError, NotReady
from milkprice.predict import metrics
from milkprice.predict.ledger import Ledgers
from milkprice.predict.snapshot import Loaded, LoadError, load
from milkprice.predict.versions import Versions

log = logging.getLogger("milkprice.predict")

# The pointer check runs on a request: a short deadline, since a failed check only delays a
# reload (store's own retries would hold that request for up to 10 s while the bucket is away).
CHECK_TIMEOUT = 1.0
MAX_BACKOFF = 60.0


def pointer_token(settings: settings_module.Settings) -> str | None:
    """The pointer's live version token, or None, with a deadline short enough for a request."""
    return contract.pointer_token(settings, CHECK_TIMEOUT)


class Server:
    """The process's model cache: the current snapshot and when to look at the pointer next."""

    def __init__(self, settings: settings_module.Settings) -> None:
        self.settings = settings
        self.interval = max(0.0, float(self.settings.reload_seconds))
        self.retry_after = max(1, int(np.ceil(self.interval)))
        self._loaded: Loaded | None = None
        self._next_check = 0.0
        self._reason = "no model is loaded yet"
        self._bad_token: str | None = None
        self._outages = 0  # storage failures in a row: the checks back off while serving
        self._lock = threading.Lock()
        self.versions = Versions(self.settings)  # the versions routes name, loaded on first use
        self.ledger = Ledgers(self.settings)  # the forecast ledger, read on first use

    @property
    def loaded(self) -> Loaded | None:
        return self._loaded

    def current(self) -> Loaded:
        """The snapshot to serve; looks at the pointer only when the interval has passed."""
        loaded = self._loaded
        if loaded is not None and time.monotonic() < self._next_check:
            return loaded
        # One request checks; while it does, the others serve the snapshot they have.
        if not self._lock.acquire(blocking=loaded is None):
            return loaded  # type: ignore[return-value]  # blocking=False only when loaded
        try:
            if time.monotonic() < self._next_check:
                return self._serving()
            try:
                self._check()
            finally:
                self._next_check = time.monotonic() + self.delay()
            return self._serving()
        finally:
            self._lock.release()

    def delay(self) -> float:
        """Seconds to the next pointer check: the interval, doubled per storage failure in a
        row while a model is serving (up to a minute); without one, keep trying every interval."""
        if self._loaded is None or not self._outages:
            return self.interval
        return max(self.interval, min(MAX_BACKOFF, self.interval * 2**self._outages))

    def _serving(self) -> Loaded:
        if self._loaded is None:
            raise NotReady(self._reason, self.retry_after)
        return self._loaded

    def _check(self) -> None:
        """Look at the pointer's token; reload if it names a version not yet tried."""
        loaded = self._loaded
        serving = loaded.version if loaded else None
        counted = metrics.get()
        try:
            generation = pointer_token(self.settings)
        except MilkPriceError as exc:
            counted.pointer_checks.labels("failed").inc()
            self._unavailable("pointer", "checking the model pointer failed", exc, serving)
            return
        self._outages = 0
        same = loaded is not None and generation == loaded.token
        counted.pointer_checks.labels(
            "missing" if generation is None else "unchanged" if same else "moved"
        ).inc()
        if generation is None:
            if loaded is not None:
                log.warning(
                    "%s is gone; still serving version %s",
                    contract.POINTER,
                    serving,
                    extra={"version": serving},
                )
            self._reason = "no model has been promoted yet"
            return
        if same or generation == self._bad_token:
            return
        self._reload(generation, serving)

    def _reload(self, generation: str, serving: str | None) -> None:
        """Load the version the pointer names now; on failure, keep serving what is served."""
        counted = metrics.get()
        try:
            new = load(self.settings)
        except LoadError as exc:
            counted.reloads.labels("failed").inc()
            self._bad_token = generation  # not retried until the pointer moves again
            self._failed("loading the promoted model failed", exc, serving, exc.message)
            return
        except MilkPriceError as exc:  # storage: try again at the next check
            counted.reloads.labels("failed").inc()
            self._unavailable("load", "loading the promoted model failed", exc, serving)
            return
        except Exception as exc:  # a bug: never let it take the serving model down
            counted.reloads.labels("failed").inc()
            self._bad_token = generation
            self._failed("loading the promoted model failed", exc, serving, "it could not be read")
            return
        if new is None:
            self._reason = "no model has been promoted yet"
            return
        self._loaded = new
        self._bad_token = None
        counted.reloads.labels("loaded").inc()
        counted.model.info({"version": new.version, "models": ",".join(sorted(new.models))})
        log.info(
            "serving model version %s (was %s)",
            new.version,
            serving,
            extra={"version": new.version},
        )

    def _unavailable(
        self, operation: str, what: str, exc: MilkPriceError, serving: str | None
    ) -> None:
        """Storage failed ``operation``: counted, and one more failure in a row (``delay``)."""
        metrics.get().storage_errors.labels(operation).inc()
        self._outages += 1
        self._failed(what, exc, serving, "storage is unavailable")

    def _failed(self, what: str, exc: BaseException, serving: str | None, reason: str) -> None:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        trace = None if isinstance(exc, MilkPriceError) else exc  # a bug: keep its stack
        now = f"still serving version {serving}" if serving else "no model to serve yet"
        log.error(
            "%s; %s: %s; next check in %.1f s",
            what,
            now,
            message,
            self.delay(),
            exc_info=trace,
            extra={"version": serving},
        )
        self._reason = f"no model is loaded yet: {reason}"


_server: Server | None = None
_server_lock = threading.Lock()


def server() -> Server:
    """The process's one cache, built on first use (not at import)."""
    global _server
    found = _server
    if found is None:
        with _server_lock:
            if _server is None:
                _server = Server(settings_module.cached())
            found = _server
    return found


def reset() -> None:
    """Forget the cache and settings (a new process, as far as serving can tell)."""
    global _server
    with _server_lock:
        _server = None
        settings_module.forget()


def current() -> Loaded:
    """The snapshot to serve now (see :meth:`Server.current`); 503 until one is loaded."""
    return server().current()


def named(version: str | None) -> Loaded:
    """The served snapshot, or with ``version`` that version's (loaded on first use)."""
    served = current()
    if version is None:
        return served
    found = server()
    return found.versions.get(version, served, found.retry_after)
