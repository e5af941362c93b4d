"""A local stand-in for a cloud scheduler: APScheduler with a cron trigger that POSTs to the
train function the way Cloud Scheduler does: an attempt deadline, retries with exponential
backoff on failure or 5xx, never two runs of the job at once, missed runs coalesced into one.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from milkprice.bridge.watcher import outcome, post
from milkprice.errors import ConfigError
from milkprice.settings import LocalSettings

log = logging.getLogger("milkprice.local.scheduler")


@dataclass(frozen=True)
class Retry:
    """Cloud Scheduler's retry config: attempts, deadline per attempt and backoff."""

    attempts: int = 4
    deadline: float = 600.0
    min_backoff: float = 5.0
    max_backoff: float = 60.0

    def delays(self) -> list[float]:
        return [min(self.min_backoff * 2**i, self.max_backoff) for i in range(self.attempts - 1)]


def with_retries(
    call: Callable[[], tuple[int, bytes]],
    retry: Retry,
    what: str,
    sleep: Callable[[float], object] = time.sleep,
) -> tuple[int, bytes]:
    """Call until an answer that is not 5xx (nor no answer at all), backing off in between."""
    status, body = call()
    for delay in retry.delays():
        if 0 < status < 500:
            break
        log.warning("%s answered %s; retrying in %.1f s", what, status or "nothing", delay)
        sleep(delay)
        status, body = call()
    return status, body


def scheduled_training(
    url: str, token: str, retry: Retry, sleep: Callable[[float], object] = time.sleep
) -> int:
    """One scheduled call to the train function; returns the final HTTP status."""
    headers = {"Content-Type": "application/json", "User-Agent": "milkprice-scheduler"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"trigger": "schedule"}).encode()
    status, answer = with_retries(
        lambda: post(url, body, headers, retry.deadline), retry, "scheduled training", sleep
    )
    said = outcome(answer)
    level = logging.INFO if 0 < status < 500 else logging.ERROR
    log.log(level, "scheduled training answered %s: %s", status or "nothing", said)
    return status


def cron(expression: str, timezone: str) -> CronTrigger:
    """A crontab line; six fields put seconds first (handy for tests and demos)."""
    fields = expression.split()
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=dow,
            timezone=timezone,
        )
    try:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(f"MILKPRICE_SCHEDULE={expression!r}: {exc}") from None


def logged(job: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``job`` that logs an unexpected exception, traceback included, on our own logger.

    The scheduler outlives a job that raises either way, but would report it on its own logger,
    which is kept to warnings and may be routed elsewhere: the failure would go unnoticed.
    """

    @functools.wraps(job)  # the scheduler names and checks the job by what it wraps
    def run(*args: Any) -> Any:
        try:
            return job(*args)
        except Exception:
            log.exception("%s failed; the next run is still scheduled", what)
            return None

    return run


def start_scheduler(
    settings: LocalSettings, url: str, retry: Retry | None = None
) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone=settings.timezone)
    scheduler.add_job(
        logged(scheduled_training, "scheduled training"),
        cron(settings.schedule, settings.timezone),
        args=(url, settings.train_token, retry or Retry()),
        id="train",
        max_instances=1,  # never two runs at once
        coalesce=True,  # missed runs become one
        misfire_grace_time=None,
    )
    scheduler.start()
    job = scheduler.get_job("train")
    log.info(
        "scheduler: training on '%s' (%s), next at %s",
        settings.schedule,
        settings.timezone,
        job.next_run_time if job else None,
    )
    return scheduler
