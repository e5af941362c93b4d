"""The forecast ledger against the real fake-gcs-server: a model trained on prices cut before
a month, then the next months uploaded one by one, retraining each time, as the system runs.

Every expectation is computed here from what users were served (the promoted versions'
manifests) and the prices uploaded, never from the ledger's own code: the rows, the figures
per horizon, the coverage band (scipy's binomial) and the drift state.
"""

from __future__ import annotations

import csv
import html
import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy.stats import binom

from milkprice import contract, store
from milkprice.contract import Ledger, ScoredForecast
from milkprice.local import cli
from milkprice.predict import cache
from milkprice.schema import MONTHS_ES
from milkprice.settings import Settings
from milkprice.train import ledger, runner
from tests.support.buckets import (
    TODAY,
    clone,
    first_release,
    manifest,
    new_settings,
    promote,
    upload,
)
from tests.support.openapi_client import Client
from tests.support.prices import skops_prices
from tests.support.rows import next_row

MILK = "precio_leche.csv"
FIRST = "2020-06"  # the first model sees prices up to here
REVISED = ("2020-07", 4.0)  # with the upload of 2020-09, July's price changes by this much
# the last three uploads each jump a quarter away from the month before: no interval holds
SHOCKS = {"2020-10": 1.25, "2020-11": 0.8, "2020-12": 1.25}
LAST = "2020-12"
FIELDS = ("month", "horizon", "version", "price", "lower", "upper", "actual", "naive", "inside")


def shift(month: str, n: int) -> str:
    i = int(month[:4]) * 12 + int(month[5:]) - 1 + n
    return f"{i // 12:04d}-{i % 12 + 1:02d}"


def parse(milk: bytes) -> dict[str, float]:
    """A price file as month -> price, read here with the csv module alone."""
    rows = csv.DictReader(io.StringIO(milk.decode()))
    return {
        f"{int(r['Anio']):04d}-{MONTHS_ES.index(r['Mes']) + 1:02d}": float(r["Precio_leche"])
        for r in rows
    }


def price_file(prices: dict[str, float]) -> bytes:
    lines = ["Anio,Mes,Precio_leche"] + [
        f"{m[:4]},{MONTHS_ES[int(m[5:]) - 1]},{p:.2f}" for m, p in sorted(prices.items())
    ]
    return ("\n".join(lines) + "\n").encode()


def uploads(base: dict[str, float]) -> list[dict[str, float]]:
    """The price file of each upload, from FIRST to LAST, with the revision and the shocks."""
    files, month = [], FIRST
    while month <= LAST:
        prices = {m: p for m, p in base.items() if m <= month}
        if month >= shift(REVISED[0], 2):
            prices[REVISED[0]] = round(prices[REVISED[0]] + REVISED[1], 2)
        for shocked, factor in SHOCKS.items():
            if shocked in prices:
                prices[shocked] = round(base[shocked] * factor, 2)
        files.append(prices)
        month = shift(month, 1)
    return files


@dataclass
class History:
    """What the system did: every upload's prices and run record, and the ledger."""

    settings: Settings
    files: list[dict[str, float]]
    records: list[contract.RunRecord]
    ledger: Ledger


@pytest.fixture(scope="module")
def h(gcs: str, sample_raw: dict[str, bytes]) -> History:
    """The system's history: a model trained on prices up to FIRST, then each next month
    uploaded and trained on, up to LAST (shared by the module's tests: do not change it)."""
    settings = new_settings(backtest_months=6)
    upload(settings, {n: p for n, p in sample_raw.items() if n != MILK})
    files = uploads(parse(sample_raw[MILK]))
    records = []
    for prices in files:
        upload(settings, {MILK: price_file(prices)})
        records.append(runner.run(settings, "http", today=TODAY))
        if len(records) == 1:  # a version never promoted: what it forecast, nobody was told
            clone(settings, settings, "never-served", edit=_far_off)
    return History(settings, files, records, contract.read_ledger(settings)[0])


def _far_off(doc: dict[str, Any]) -> None:
    for m in doc["path"]["months"]:
        m.update(price=m["price"] + 50, lower=m["lower"] + 50, upper=m["upper"] + 50)


def expected_rows(h: History) -> list[dict[str, Any]]:
    """Each promoted version's path months whose price has arrived: the forecast users were
    told, against the price first uploaded for the month; the naive forecast is the price of
    the month the version's data ended, in that same upload."""
    first_seen: dict[str, int] = {}
    for k, prices in enumerate(h.files):
        for month in prices:
            first_seen.setdefault(month, k)
    rows = []
    for record in h.records:
        if record.outcome != "promoted":
            continue
        assert record.version is not None
        for m in manifest(h.settings, record.version)["path"]["months"]:
            if m["month"] not in first_seen:
                continue
            upload_ = h.files[first_seen[m["month"]]]
            actual = upload_[m["month"]]
            rows.append(
                {
                    "month": m["month"],
                    "horizon": m["horizon"],
                    "version": record.version,
                    "price": m["price"],
                    "lower": m["lower"],
                    "upper": m["upper"],
                    "actual": actual,
                    "naive": upload_[shift(m["month"], -m["horizon"])],
                    "inside": m["lower"] <= actual <= m["upper"],
                    "step": first_seen[m["month"]],
                }
            )
    return sorted(rows, key=lambda r: (r["month"], r["horizon"]))


def as_rows(forecasts: list[ScoredForecast]) -> list[dict[str, Any]]:
    return [{k: getattr(f, k) for k in FIELDS} for f in forecasts]


def expected_drift(rows: list[dict[str, Any]]) -> tuple[str, set[tuple[int, str]]]:
    signals = set()
    for h in range(1, 13):
        inside = [r["inside"] for r in rows if r["horizon"] == h]
        if inside and sum(inside) < binom.ppf(0.05, len(inside), 0.8):
            signals.add((h, "coverage"))
    last = [r["inside"] for r in rows if r["horizon"] == 1][-3:]
    if len(last) == 3 and not any(last):
        signals.add((1, "misses"))
    return ("drift" if signals else "ok"), signals


# ---------------------------------------------------------------- the ledger


def test_every_served_forecast_is_scored_against_the_price_that_arrived(h: History) -> None:
    rows = expected_rows(h)
    assert len(rows) >= 15 and {r["horizon"] for r in rows} >= {1, 2, 3, 4}
    assert as_rows(h.ledger.forecasts) == [{k: r[k] for k in FIELDS} for r in rows]
    for f in h.ledger.forecasts:
        assert f.error == f.price - f.actual and f.source == "path" and f.level == 0.8
    # each run scored the months its upload brought, and says so in its record
    for k, record in enumerate(h.records):
        assert record.ledger is not None and record.ledger.error == ""
        assert record.ledger.scored == sum(r["step"] == k for r in rows), k
        assert "ledger" in record.timings


def test_figures_per_horizon_beside_the_naive_forecast(h: History) -> None:
    rows = expected_rows(h)
    horizons = sorted({r["horizon"] for r in rows})
    assert [f.horizon for f in h.ledger.horizons] == horizons
    for f in h.ledger.horizons:
        mine = [r for r in rows if r["horizon"] == f.horizon]
        e = np.array([r["price"] - r["actual"] for r in mine])
        n = np.array([r["naive"] - r["actual"] for r in mine])
        inside = sum(r["inside"] for r in mine)
        assert f.count == f.intervals == len(mine) and f.inside == inside
        assert f.forecast.rmse == pytest.approx(math.sqrt(np.mean(e**2)), rel=1e-12)
        assert f.forecast.mae == pytest.approx(np.mean(np.abs(e)), rel=1e-12)
        assert f.forecast.bias == pytest.approx(np.mean(e), rel=1e-12, abs=1e-12)
        assert f.naive.rmse == pytest.approx(math.sqrt(np.mean(n**2)), rel=1e-12)
        assert f.naive.bias == pytest.approx(np.mean(n), rel=1e-12, abs=1e-12)
        assert f.rmse_to_naive == pytest.approx(f.forecast.rmse / f.naive.rmse)
        assert f.coverage == pytest.approx(inside / len(mine))
        band = [binom.ppf(0.05, len(mine), 0.8) / len(mine), binom.ppf(0.95, len(mine), 0.8)]
        assert f.coverage_band == pytest.approx([band[0], band[1] / len(mine)])
    # beside them, what the newest served path's backtest promised
    newest = manifest(h.settings)["path"]["short"]["horizons"]
    assert h.ledger.horizons[0].backtest_rmse == newest[0]["path"]["rmse"]


def test_drift_is_said_when_the_intervals_stop_holding(h: History) -> None:
    state, signals = expected_drift(expected_rows(h))
    assert state == "drift" and (1, "misses") in signals  # the shocks did what they are for
    assert h.ledger.drift.state == state
    assert {(s.horizon, s.kind) for s in h.ledger.drift.signals} == signals
    assert ledger.drift_state(h.settings) == h.ledger.drift
    # the run record of the run that saw it says so
    last = h.records[-1].ledger
    assert last is not None and last.drift == h.ledger.drift
    # before the shocks nothing had drifted
    before = expected_drift([r for r in expected_rows(h) if r["month"] < "2020-10"])
    record = h.records[len(h.files) - len(SHOCKS) - 1].ledger
    assert record is not None and record.drift is not None
    assert record.drift.state == before[0]


def test_a_revised_price_is_a_revision_and_the_entries_keep_the_first(h: History) -> None:
    month, change = REVISED
    first = h.files[1][month]
    [revision] = h.ledger.revisions
    assert (revision.month, revision.previous) == (month, first)
    assert revision.actual == pytest.approx(first + change)
    assert revision.run_id == h.records[3].run_id
    scored = [f for f in h.ledger.forecasts if f.month == month]
    assert scored and all(f.actual == first for f in scored)
    # the upload that revised it recorded it, and the later ones (same price) did not again
    assert [r.ledger.revised if r.ledger else None for r in h.records] == [0, 0, 0, 1, 0, 0, 0]


def test_a_first_run_builds_the_ledger_from_the_archive(h: History, gcs: str) -> None:
    """A bucket that ran without a ledger (nor a pointer history): the runs, models and
    archived raw files alone give the same ledger, revisions included."""
    other = new_settings(backtest_months=6)
    for name, _ in store.list_names(h.settings, ""):
        if name.startswith(("ledger/", contract.HISTORY)):
            continue
        blob = store.read(h.settings, name)
        assert blob is not None
        store.write(other, name, blob.data)
    record = runner.run(other, "http", today=TODAY)
    assert record.ledger is not None and record.ledger.scored == len(h.ledger.forecasts)
    rebuilt, _ = contract.read_ledger(other)
    assert as_rows(rebuilt.forecasts) == as_rows(h.ledger.forecasts)
    assert [(r.month, r.previous, r.actual, r.run_id) for r in rebuilt.revisions] == [
        (r.month, r.previous, r.actual, r.run_id) for r in h.ledger.revisions
    ]
    assert rebuilt.drift == h.ledger.drift


# ---------------------------------------------------------------- where users see it


@pytest.fixture
def serving_history(
    h: History, use_bucket: Callable[[Settings], None], fresh_process: None
) -> History:
    use_bucket(h.settings)
    return h


def test_accuracy_route_answers_the_ledger(serving_history: History) -> None:
    h = serving_history
    client = Client()  # every answer is checked against the OpenAPI document
    answer = client.get("/accuracy")
    assert answer.status_code == 200
    doc = answer.get_json()
    assert doc["drift"] == contract.to_builtins(h.ledger.drift)
    assert doc["horizons"] == contract.to_builtins(h.ledger)["horizons"]
    assert [{k: f[k] for k in FIELDS} for f in doc["forecasts"]] == as_rows(h.ledger.forecasts)
    assert doc["revisions"][0]["month"] == REVISED[0]
    assert "spans" not in doc  # the ledger's own bookkeeping stays in the bucket


def test_landing_page_shows_live_accuracy(serving_history: History) -> None:
    h = serving_history
    page = Client().get("/").get_data(as_text=True)
    assert 'id="accuracy"' in page and 'id="accuracy-chart"' in page
    for f in h.ledger.horizons:
        assert f"<td>{f.horizon}</td>" in page
        assert f"{f.forecast.rmse:.2f}" in page and f"{f.naive.rmse:.2f}" in page
    section = html.unescape(page.split('id="accuracy"')[1].split("</section>")[0])
    assert "<strong>Drift</strong>" in section and h.ledger.drift.signals[0].message in section
    # one point with its interval per one-month forecast scored
    one = [f for f in h.ledger.forecasts if f.horizon == 1]
    assert page.count('class="served"') == len(one)


def test_cli_accuracy_prints_the_table(
    serving_history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    h = serving_history
    assert cli.main(["accuracy", "--forecasts"]) == 0
    out = capsys.readouterr().out
    for figures in h.ledger.horizons:
        key = [str(figures.horizon), str(figures.count)]
        line = next(x for x in out.splitlines() if x.split()[:2] == key)
        assert f"{figures.forecast.rmse:.2f}" in line and f"{figures.naive.rmse:.2f}" in line
        assert f"{figures.coverage:.0%}" in line
    assert "drift:" in out and h.ledger.drift.signals[0].message in out
    for f in h.ledger.forecasts:
        assert any(
            f.month in x and f.version in x and f"{f.price:.2f}" in x for x in out.splitlines()
        )
    # the status command says it in one line
    assert cli.main(["status"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("live accuracy")]
    assert f"{len(h.ledger.forecasts)} served forecasts scored" in line
    assert h.ledger.drift.signals[0].message in line


# ---------------------------------------------------------------- writers and old models


def entry(month: str, price: float) -> ScoredForecast:
    return ScoredForecast(
        month=month,
        horizon=1,
        version="v",
        promoted="2026-01-01T00:00:00Z",
        source="path",
        price=price,
        actual=100.0,
        naive=99.0,
        error=price - 100.0,
        lower=95.0,
        upper=105.0,
        level=0.8,
        inside=95.0 <= 100.0 <= 105.0,
    )


def test_two_writers_racing_lose_nothing(settings: Settings) -> None:
    """Both read the same ledger before either writes: one swap fails, and that writer reads
    the other's ledger and adds its entry to it."""
    both_read = threading.Barrier(2, timeout=30)
    calls: list[str] = []
    errors: list[BaseException] = []

    def writer(month: str, price: float) -> None:
        def change(doc: Ledger) -> Ledger:
            calls.append(month)
            if calls.count(month) == 1:
                both_read.wait()
            return ledger.add(doc, [entry(month, price)], [], [], {}, f"run-{month}")

        try:
            contract.update(settings, contract.LEDGER, Ledger, change)
        except BaseException as exc:  # seen by the test, not lost in the thread
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=a) for a in (("2026-01", 101.0), ("2026-02", 110.0))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(calls) == ["2026-01", "2026-01", "2026-02"] or sorted(calls) == [
        "2026-01",
        "2026-02",
        "2026-02",
    ]
    doc, _ = contract.read_ledger(settings)
    assert [(f.month, f.price) for f in doc.forecasts] == [("2026-01", 101.0), ("2026-02", 110.0)]
    [one] = doc.horizons
    assert one.count == 2 and one.forecast.rmse == pytest.approx(math.sqrt((1 + 100) / 2))


def test_a_model_from_before_the_path_is_scored_one_month_ahead(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    """The first release's version served its forecast model's price of next month's row:
    that is the one-month forecast scored, against the price that arrived for that month."""
    version = first_release(settings)
    promote(settings, version)
    doc = manifest(settings, version)
    month = doc["next"]["month"]
    prices = parse(sample_raw[MILK])
    assert month not in prices
    prices[month] = 301.5
    upload(settings, {**sample_raw, MILK: price_file(prices)})
    record = runner.run(settings, "http", today=TODAY)
    assert record.ledger is not None and record.ledger.scored == 1
    price = float(skops_prices(settings, doc, "forecast", [next_row(doc)])[0])
    interval = doc["models"]["forecast"]["interval"]
    low, high = price * (1 + interval["lower_ratio"]), price * (1 + interval["upper_ratio"])
    [scored] = contract.read_ledger(settings)[0].forecasts
    assert (scored.month, scored.horizon, scored.version, scored.source) == (
        month,
        1,
        version,
        "model",
    )
    assert scored.price == pytest.approx(price, rel=1e-9)
    assert (scored.lower, scored.upper) == (pytest.approx(low), pytest.approx(high))
    assert scored.actual == 301.5 and scored.naive == prices[shift(month, -1)]
    assert scored.inside == (low <= 301.5 <= high)
    # the pointer's history holds both promotions, and a rollback leaves its trace there too
    assert [e.version for e in contract.read_history(settings).events] == [
        version,
        record.version,
    ]
    contract.rollback(settings, version)
    last = contract.read_history(settings).events[-1]
    assert (last.version, last.run_id) == (version, f"rollback-{version}")


def test_a_ledger_that_cannot_be_written_never_stops_a_run(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    """The ledger reports on earlier forecasts: when it fails, the run says why in its record
    and trains and promotes all the same; the object is left as it was."""
    store.write(settings, contract.LEDGER, b'{"forecasts": "not a list"}')
    upload(settings, sample_raw)
    record = runner.run(settings, "http", today=TODAY)
    assert record.outcome == "promoted", record.reason
    assert record.ledger is not None and "ledger/forecasts.json" in record.ledger.error
    assert "ledger" in record.timings
    written = contract.read_run(settings, record.run_id)
    assert written is not None and written.ledger == record.ledger
    blob = store.read(settings, contract.LEDGER)
    assert blob is not None and blob.data == b'{"forecasts": "not a list"}'


def test_accuracy_follows_the_ledger_not_the_pointer(
    settings: Settings, fresh_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that promotes nothing may still score forecasts: /accuracy looks at the
    ledger's own token, at most every reload_seconds, whatever the pointer does."""

    def write(month: str) -> None:
        contract.update(
            settings,
            contract.LEDGER,
            Ledger,
            lambda d: ledger.add(d, [entry(month, 101.0)], [], [], {}, f"run-{month}"),
        )

    def months(client: Client) -> list[str]:
        return [f["month"] for f in client.get("/accuracy").get_json()["forecasts"]]

    monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", "3600")
    client = Client()
    assert months(client) == []
    write("2026-01")
    assert months(client) == []  # not looked at again within the interval
    cache.reset()
    monkeypatch.setenv("MILKPRICE_RELOAD_SECONDS", "0")
    client = Client()
    assert months(client) == ["2026-01"]
    write("2026-02")
    assert months(client) == ["2026-01", "2026-02"]
