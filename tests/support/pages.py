"""What the landing page shows, read back from its HTML as a reader would see it."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class Page(HTMLParser):
    """The text of every element with an id, and the rows of every table with an id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self._open: list[str | None] = []  # the id of each open element (None: it has none)
        self._table: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if tag == "table" and ident:
            self._table = ident
            self.tables[ident] = []
        elif self._table and tag == "tr":
            self.tables[self._table].append([])
        elif self._table and tag in ("td", "th"):
            self.tables[self._table][-1].append("")
        if tag not in VOID:
            self._open.append(ident)
            if ident:
                self.texts.setdefault(ident, "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        if tag not in VOID and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in filter(None, self._open):
            self.texts[ident] += data
        if self._table and self.tables[self._table] and self.tables[self._table][-1]:
            self.tables[self._table][-1][-1] += data

    def text(self, ident: str) -> str:
        """The text of the element ``ident``, its white space collapsed."""
        return " ".join(self.texts[ident].split())

    def rows(self, ident: str) -> list[list[str]]:
        """The table ``ident``'s rows (the header's too), each cell's white space collapsed."""
        return [[" ".join(c.split()) for c in row] for row in self.tables[ident]]


CARD = re.compile(r"Forecast for (\S+) (\S+) .*?(\d+)% interval: (\S+) to (\S+)")


def shown_forecast(html: str) -> dict[str, str]:
    """The forecast the landing page's card shows: month, price and interval, as printed."""
    found = CARD.match(Page(html).text("forecast"))
    assert found is not None, Page(html).text("forecast")
    return dict(zip(("month", "price", "level", "lower", "upper"), found.groups(), strict=True))


def printed(month: dict[str, Any]) -> dict[str, str]:
    """A month of the forecast (as /forecast answers it) as the page and the CLI print it."""
    band = month["interval"]
    return {
        "month": month["month"],
        "price": f"{month['price']:.2f}",
        "level": f"{band['level'] * 100:.0f}",
        "lower": f"{band['lower']:.2f}",
        "upper": f"{band['upper']:.2f}",
    }
