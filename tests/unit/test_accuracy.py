"""Live accuracy's pure parts: the coverage band, the drift rules, who served what, the cut."""

from __future__ import annotations

import csv
import io

import pytest
from scipy.stats import binom

from milkprice import accuracy
from milkprice.contract import Pointer, ScoredForecast, Served, Span
from milkprice.local import replay, sample
from milkprice.train import ledger


@pytest.mark.parametrize("level", [0.8, 0.5, 0.95])
def test_the_coverage_band_is_the_binomial_central_90_percent(level: float) -> None:
    for n in range(1, 121):
        low, high = accuracy.coverage_band(n, level)
        assert low == binom.ppf(0.05, n, level) / n, n
        assert high == binom.ppf(0.95, n, level) / n, n


def scored(month: str, inside: bool, horizon: int = 1) -> ScoredForecast:
    return ScoredForecast(
        month=month,
        horizon=horizon,
        version="v",
        promoted="2026-01-01T00:00:00Z",
        source="path",
        price=100.0,
        actual=100.0 if inside else 130.0,
        naive=100.0,
        error=0.0 if inside else -30.0,
        lower=95.0,
        upper=105.0,
        level=0.8,
        inside=inside,
    )


def months(n: int) -> list[str]:
    return [accuracy.add_months("2019-01", i) for i in range(n)]


def state(forecasts: list[ScoredForecast]) -> tuple[str, set[tuple[int, str]]]:
    found = accuracy.drift(forecasts, accuracy.horizon_figures(forecasts))
    return found.state, {(s.horizon, s.kind) for s in found.signals}


def test_drift_rules() -> None:
    assert state([]) == ("none", set())
    # 20 two-month forecasts: the band's low end is binom.ppf(0.05, 20, 0.8) = 13 held
    lows = int(binom.ppf(0.05, 20, 0.8))
    held = [scored(m, i < lows, horizon=2) for i, m in enumerate(months(20))]
    assert state(held) == ("ok", set())
    held[lows - 1] = scored(held[lows - 1].month, False, horizon=2)
    assert state(held) == ("drift", {(2, "coverage")})
    # one month ahead: three misses in a row, the last three, say drift at once
    ones = [scored(m, i < 7) for i, m in enumerate(months(10))]  # 70%: within the band
    assert state(ones) == ("drift", {(1, "misses")})
    ones[7] = scored(ones[7].month, True)  # a hit among the last three: not that rule
    assert state(ones) == ("ok", set())
    assert "outside their intervals" in accuracy.summary(accuracy.drift(ones[-2:] * 2, []))


def event(version: str, at: str, run_id: str = "", source: str = "pointer") -> Served:
    return Served(version, run_id or f"run-{version}", f"2026-01-01T00:00:{at}Z", source)  # type: ignore[arg-type]


def test_of_versions_with_the_same_data_the_last_promoted_counts() -> None:
    spans = {"a": Span("2020-01", 12), "b": Span("2020-01", 12), "c": Span("2020-02", 12)}
    spans["d"] = Span("", 0)  # forecast nothing scorable
    events = [event("a", "01"), event("b", "02"), event("c", "03"), event("d", "04")]
    assert {e: w.version for e, w in ledger.winners(events, spans, None).items()} == {
        "2020-01": "b",
        "2020-02": "c",
    }
    # a rollback to a is a promotion like any other: from then on a is what users are told
    rolled = [*events, event("a", "05", run_id="rollback-a")]
    assert ledger.winners(rolled, spans, None)["2020-01"].run_id == "rollback-a"
    # a reading of an earlier upload sees only the promotions made before it
    early = ledger.winners(rolled, spans, "2026-01-01T00:00:01Z")
    assert {e: w.version for e, w in early.items()} == {"2020-01": "a"}


def test_the_timeline_takes_each_promotion_once() -> None:
    known = [event("a", "01")]
    pointers = [
        Pointer("a", "run-a", "2026-01-01T00:00:01Z", "w1"),
        Pointer("b", "run-b", "2026-01-01T00:00:05Z", "w2"),
        Pointer("a", "rollback-a", "2026-01-01T00:00:05Z", "w3"),  # same second, after b
    ]
    runs = [event("b", "06", "run-b", "run"), event("x", "03", "run-x", "run")]
    found = ledger.timeline(known, pointers, runs)
    assert [(e.version, e.run_id, e.source) for e in found] == [
        ("a", "run-a", "pointer"),
        ("x", "run-x", "run"),  # known from its run record alone (before the history)
        ("b", "run-b", "pointer"),  # the pointer's time, not the record's
        ("a", "rollback-a", "pointer"),
    ]


def rows(name: str, payload: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(payload.decode("utf-8-sig"))))


def test_replay_cuts_every_file_after_a_month() -> None:
    raw = sample.sample_files()
    cut = replay.cut_files(raw, "2019-03")
    milk = rows("", cut["precio_leche.csv"])
    assert milk[-1][:2] == ["2019", "Mar"] and len(milk) == 1 + (2019 - 1979) * 12 + 3
    dates = [r[0] for r in rows("", cut["precipitaciones.csv"])[1:]]
    assert max(dates) == "2019-03-01" and len(dates) == len(set(dates))
    periods = [r[0] for r in rows("", cut["banco_central.csv"])[1:]]
    assert max(p for p in periods if p[5:7] <= "12") < "2019-04"
    assert "2020-13-01 00:00:00 UTC" in periods  # a period that does not read stays
    assert replay.last_month(cut["precio_leche.csv"]) == "2019-03"
