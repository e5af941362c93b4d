"""How ``milkprice up`` shows its children's lines: JSON for a log collector, text for a person.

The functions always log JSON (they run in the cloud as they run here); only ``up``'s display of
those lines changes. :func:`choose` settles ``auto`` once, :func:`render` turns one raw line into
what is printed.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime
from typing import Any, Literal, Protocol

Shown = Literal["text", "json"]

NAME_WIDTH = 12
# time (8) + two spaces + name column + two spaces: continuation lines start under the message
INDENT = " " * (8 + 2 + NAME_WIDTH + 2)
_TAGS = (("run_id", "run"), ("version", "version"), ("trigger", "trigger"))


class Terminalish(Protocol):
    def isatty(self) -> bool: ...


def choose(log_format: str, stream: Terminalish) -> Shown:
    """``auto`` is text on a terminal and JSON otherwise (a pipe, a file, a collector)."""
    if log_format == "auto":
        return "text" if stream.isatty() else "json"
    if log_format == "text":
        return "text"
    if log_format == "json":
        return "json"
    raise ValueError(f"unknown log format {log_format!r}")


def as_json_line(name: str, line: str) -> str:
    """Lines that are not already structured logs (fake-gcs-server's, a traceback) become one."""
    if line.startswith("{"):
        return line
    lowered = line.lower()
    severity = "INFO"
    for word, level in (
        ("level=warn", "WARNING"),
        ("level=error", "ERROR"),
        ("level=fatal", "CRITICAL"),
        ("error", "ERROR"),
        ("traceback", "ERROR"),
        ("warning", "WARNING"),
    ):
        if word in lowered:
            severity = level
            break
    return json.dumps({"severity": severity, "message": line, "component": name})


def render(name: str, line: str, shown: Shown, now: datetime | None = None) -> str:
    """The text printed for one raw line of child ``name``; may span several lines."""
    if shown == "json":
        return f"{name:>{NAME_WIDTH}} | {as_json_line(name, line)}"
    entry = _parse(line)
    if entry is None:  # not ours to reshape: shown as the child wrote it
        return _row(_clock(None, now), name, line)
    head = str(entry["message"])
    severity = str(entry.get("severity", "INFO"))
    if severity != "INFO":
        head = f"{severity}  {head}"
    tags = _tags(entry, head)
    if tags:
        head = f"{head}  [{tags}]"
    text = _row(_clock(entry.get("time"), now), name, head)
    trace = entry.get("stack_trace")
    if trace:
        text += "\n" + _indented(str(trace))
    return text


def say(message: str, shown: Shown, now: datetime | None = None) -> str:
    """A line of ``up`` itself: plain after the name in JSON mode, as it always was."""
    if shown == "json":
        return f"{'up':>{NAME_WIDTH}} | {message}"
    return _row(_clock(None, now), "up", message)


def emit(text: str) -> None:
    # one write per entry, so a stack trace is not split by another child's line
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _parse(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "message" in entry else None


def _tags(entry: dict[str, Any], message: str) -> str:
    """Run id, version and trigger, skipping any the message already spells out."""
    parts = [
        f"{label} {entry[key]}"
        for key, label in _TAGS
        if entry.get(key) and str(entry[key]) not in message
    ]
    logger = str(entry.get("logger", ""))
    if logger and logger != "root" and not logger.startswith("milkprice"):
        parts.append(logger)  # a library's line: say which library
    return ", ".join(parts)


def _clock(stamp: Any, now: datetime | None) -> str:
    """HH:MM:SS in local time; the logs carry UTC, lines without a time get the current one."""
    when = now or datetime.now().astimezone()
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):  # an unreadable time: the current one will do
            when = datetime.fromisoformat(stamp)
    if when.tzinfo is not None:
        when = when.astimezone()
    return when.strftime("%H:%M:%S")


def _row(clock: str, name: str, message: str) -> str:
    first, *rest = message.split("\n")
    text = f"{clock}  {name:<{NAME_WIDTH}}  {first}"
    return "\n".join([text, *(INDENT + r for r in rest)]) if rest else text


def _indented(block: str) -> str:
    return "\n".join(INDENT + r for r in block.rstrip("\n").split("\n"))
