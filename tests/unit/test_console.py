"""What ``milkprice up`` shows: readable lines on a terminal, unchanged JSON lines elsewhere."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from milkprice import logs
from milkprice.errors import ConfigError
from milkprice.local import cli, console, scheduler
from milkprice.settings import LocalSettings

STAMP = "2026-12-02T11:41:02.123Z"
LOCAL = datetime(2026, 12, 2, 11, 41, 2, tzinfo=UTC).astimezone().strftime("%H:%M:%S")
NOW = datetime(2026, 12, 2, 9, 30, 0)


def entry(message: str, severity: str = "INFO", **more: object) -> str:
    fields = {"severity": severity, "message": message, "time": STAMP, "component": "train"}
    return json.dumps({**fields, "logger": "milkprice.train", **more})


class Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_text_form_has_local_time_component_message_and_run_id() -> None:
    line = entry("backtest 3/12 ridge_change", run_id="20261202-084055-ab12")
    shown = console.render("train", line, "text")
    assert shown.startswith(f"{LOCAL}  train ")
    assert "backtest 3/12 ridge_change" in shown
    assert "run 20261202-084055-ab12" in shown
    assert "{" not in shown and "INFO" not in shown and "milkprice.train" not in shown


def test_tags_the_message_already_spells_out_are_not_repeated() -> None:
    line = entry("run r1 started (http)", run_id="r1", trigger="http", version="v7")
    shown = console.render("train", line, "text")
    assert shown.count("r1") == 1 and shown.count("http") == 1
    assert shown.endswith("[version v7]")


def test_severity_is_shown_unless_info() -> None:
    assert "WARNING  slow bucket" in console.render(
        "events", entry("slow bucket", "WARNING"), "text"
    )
    assert "ERROR  run failed" in console.render("train", entry("run failed", "ERROR"), "text")
    assert "INFO" not in console.render("train", entry("all good"), "text")


def test_a_library_line_names_its_logger() -> None:
    line = entry("job missed", "WARNING", logger="apscheduler.executors.default")
    assert console.render("events", line, "text").endswith("[apscheduler.executors.default]")


@pytest.mark.parametrize(
    "raw",
    [
        'time="2026-12-02" level=info msg="server started at http://0.0.0.0:4443"',
        "Traceback (most recent call last):",
        "{not json at all",
        '{"no_message": 1}',
    ],
)
def test_lines_that_are_not_our_json_pass_through(raw: str) -> None:
    assert console.render("gcs", raw, "text", now=NOW) == f"09:30:00  gcs           {raw}"


def test_stack_trace_is_indented_under_its_line() -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad'
    shown = console.render("train", entry("run failed", "ERROR", stack_trace=trace), "text")
    first, *rest = shown.split("\n")
    assert "ERROR  run failed" in first
    assert rest == [console.INDENT + t for t in trace.split("\n")]


def test_json_mode_keeps_the_lines_as_they_were() -> None:
    line = entry("ready", version="v1")
    assert console.render("predict", line, "json") == f"     predict | {line}"
    wrapped = console.render("gcs", "level=error boom", "json")
    assert wrapped.startswith("         gcs | ")
    assert json.loads(wrapped.split(" | ", 1)[1])["severity"] == "ERROR"
    assert console.say("ready.", "json") == "          up | ready."
    assert console.say("ready.", "text", now=NOW) == "09:30:00  up            ready."


def test_auto_picks_text_only_on_a_terminal() -> None:
    assert console.choose("auto", Stream(tty=True)) == "text"
    assert console.choose("auto", Stream(tty=False)) == "json"
    assert console.choose("json", Stream(tty=True)) == "json"
    assert console.choose("text", Stream(tty=False)) == "text"


def test_log_format_setting_and_flag() -> None:
    assert LocalSettings.from_env({}).log_format == "auto"
    assert LocalSettings.from_env({"MILKPRICE_LOG_FORMAT": "text"}).log_format == "text"
    with pytest.raises(ConfigError) as caught:
        LocalSettings.from_env({"MILKPRICE_LOG_FORMAT": "pretty"})
    assert "MILKPRICE_LOG_FORMAT" in caught.value.message
    assert all(word in caught.value.message for word in ("auto", "text", "json"))
    assert cli.parser().parse_args(["up", "--log-format", "json"]).log_format == "json"
    assert cli.parser().parse_args(["up"]).log_format is None


@contextmanager
def fresh_logging() -> Iterator[None]:
    """Logging as a new process has it; the test run's own afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.Formatter.converter)
    levels = {name: logging.getLogger(name).level for name in logs.QUIET}
    root.handlers = []
    for name in logs.QUIET:
        logging.getLogger(name).setLevel(logging.NOTSET)
    try:
        yield
    finally:
        root.handlers, _, logging.Formatter.converter = saved
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_setup_quiets_libraries_and_keeps_the_project_at_info() -> None:
    with fresh_logging():
        logs.setup("events")
        assert logging.getLogger("apscheduler").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.INFO) is False
        assert logging.getLogger("milkprice").getEffectiveLevel() == logging.INFO
        assert logging.getLogger("milkprice.local.scheduler").isEnabledFor(logging.INFO)


def test_starting_the_scheduler_shows_no_library_chatter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with fresh_logging():
        logs.setup("events")
        jobs = scheduler.start_scheduler(LocalSettings(), "http://127.0.0.1:9/")
        try:
            out = capsys.readouterr().out
        finally:
            jobs.shutdown(wait=False)
    lines = [json.loads(line) for line in out.splitlines()]
    assert any(e["message"].startswith("scheduler: training on") for e in lines), out
    assert not any("Adding job" in e["message"] for e in lines), out
    assert all(e["logger"].startswith("milkprice") for e in lines), out
