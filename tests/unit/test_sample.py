"""Tests of the deterministic sample raw data generator."""

from __future__ import annotations

import csv
import io
import math
import pathlib
import re
from datetime import datetime

import numpy as np
import pytest

from milkprice.local import sample
from tests.support.paths import SHARED

DOTTED = re.compile(r"^\d{1,3}(\.\d{3})+$")


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return sample.sample_files()


def _rows(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8"))))


def _decode(cell: str, reference: float) -> float:
    """Digits of a dotted/plain cell placed at the power of ten nearest (in log) to reference."""
    digits = cell.replace(".", "")
    mantissa = int(digits) / 10 ** (len(digits) - 1)
    exponent = round(math.log10(reference / mantissa))
    return mantissa * 10.0**exponent


def test_determinism() -> None:
    assert sample.sample_files(0) == sample.sample_files(0)
    a, b = sample.sample_files(0), sample.sample_files(1)
    assert all(a[name] != b[name] for name in sample.SAMPLE_FILES)
    assert tuple(a) == sample.SAMPLE_FILES


def test_bytes_format(files: dict[str, bytes]) -> None:
    for content in files.values():
        assert b"\r" not in content and content.endswith(b"\n")
        content.decode("utf-8")


def test_headers_equal_real_files(files: dict[str, bytes]) -> None:
    if not SHARED.is_dir():
        pytest.skip("real data folder absent")
    for name in sample.SAMPLE_FILES:
        real = (SHARED / name).read_bytes().decode("utf-8").splitlines()[0].strip()
        assert files[name].decode("utf-8").splitlines()[0] == real


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (102.796218, "102.796.218"),
        (569.18370, "5.691.837"),
        (97.8554365, "978.554.365"),
        (10.546824, "10.546.824"),
        (28.5, "285"),
        (3.2791, "32.791"),
        (100.0, "1"),
    ],
)
def test_encode_dotted_examples(value: float, expected: str) -> None:
    assert sample.encode_dotted(value) == expected


def test_encode_dotted_round_trip() -> None:
    rng = np.random.default_rng(123)
    for v in np.exp(rng.uniform(0.0, math.log(1e5), size=2000)):
        value = float(v)
        digits = sample.encode_dotted(value).replace(".", "")
        int_digits = int(f"{value:.8e}".split("e")[1]) + 1
        digits = digits.ljust(int_digits, "0")
        decoded = float(digits[:int_digits] + "." + digits[int_digits:])
        assert decoded == float(f"{value:.9g}")


def test_milk_file(files: dict[str, bytes]) -> None:
    rows = _rows(files["precio_leche.csv"])[1:]
    assert rows[0][:2] == ["1979", "Ene"] and rows[-1][:2] == ["2021", "Feb"]
    assert len(rows) == 42 * 12 + 2
    assert [r[1] for r in rows[:12]] == list(sample.MESES)
    prices = np.array([float(r[2]) for r in rows])
    assert all(re.fullmatch(r"\d+\.\d\d", r[2]) for r in rows)
    assert (prices > 0).all() and 2 < prices[0] < 8 and 150 < prices[-1] < 450
    short = _rows(sample.sample_files(end="2020-06")["precio_leche.csv"])
    assert short[-1][:2] == ["2020", "Jun"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_seasonal_naive_beats_naive(seed: int) -> None:
    rows = _rows(sample.sample_files(seed)["precio_leche.csv"])[1:]
    y = np.array([float(r[2]) for r in rows])
    t = np.arange(len(y) - 60, len(y))
    naive = y[t - 1]
    seasonal = y[t - 1] + (y[t - 12] - y[t - 13])
    rmse_naive = np.sqrt(np.mean((y[t] - naive) ** 2))
    rmse_seasonal = np.sqrt(np.mean((y[t] - seasonal) ** 2))
    assert rmse_seasonal < rmse_naive


def test_precipitation_traps(files: dict[str, bytes]) -> None:
    rows = _rows(files["precipitaciones.csv"])[1:]
    dates = [r[0] for r in rows]
    assert dates != sorted(dates) and len(set(dates)) == len(dates) == 496
    assert min(dates) == "1979-01-01" and max(dates) == "2020-04-01"
    rain = np.array([[float(x) for x in r[1:]] for r in rows])
    assert (rain >= 0).all()
    assert rain[:, 0].mean() < rain[:, -1].mean()
    winter = np.array([d[5:7] in ("05", "06", "07", "08") for d in dates])
    assert (rain[winter].mean(axis=0) > rain[~winter].mean(axis=0)).all()


def test_banco_traps(files: dict[str, bytes]) -> None:
    rows = _rows(files["banco_central.csv"])
    header, body = rows[0], rows[1:]
    periods = [r[0] for r in body]
    dupes = {p for p in periods if periods.count(p) > 1}
    assert len(dupes) == 1
    dup_rows = [r for r in body if r[0] in dupes]
    assert dup_rows[0] == dup_rows[1]
    bad = []
    for p in set(periods):
        try:
            datetime.strptime(p, "%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            bad.append(p)
    assert bad == ["2020-13-01 00:00:00 UTC"]
    assert periods != sorted(periods)
    col = {name: [r[i] for r in body] for i, name in enumerate(header)}
    by_period = dict(zip(periods, body, strict=True))
    assert any(DOTTED.match(c) for c in col["Imacec_empalmado"])
    assert any(DOTTED.match(c) for c in col["PIB"])
    assert all(c == "" or DOTTED.match(c) or re.fullmatch(r"\d{1,3}", c) for c in col["PIB"])
    assert all(re.fullmatch(r"\d+", c) for c in col["Ventas_autos_nuevos"] if c)
    for name in (
        "Precio_de_la_onza_troy_de_oro_dolaresoz",
        "Precio_del_petroleo_Brent_dolaresbarril",
    ):
        assert all(re.fullmatch(r"\d+(\.\d{1,4})?", c) for c in col[name] if c)
    first = header.index("Imacec_empalmado")
    assert by_period["1995-12-01 00:00:00 UTC"][first] == ""
    assert by_period["1996-01-01 00:00:00 UTC"][first] != ""
    nosabe = header.index("No_sabe__No_responde_Miles_de_personas")
    assert {p[:4] for p in periods if by_period[p][nosabe]} == {"2020"}


def test_dotted_series_decode_near_median() -> None:
    values = sample._banco_values(np.random.default_rng(0).spawn(3)[2])
    rows = _rows(sample.sample_files(0)["banco_central.csv"])
    header = rows[0]
    by_period = {r[0]: r for r in rows[1:]}
    for name, true in values.items():
        if not _is_dotted(name):
            continue
        present = true[np.isfinite(true)]
        median = float(np.median(present))
        assert median / 3 < present.min() and present.max() < 3 * median, name
        j = header.index(name)
        for i in np.flatnonzero(np.isfinite(true)):
            period = f"{1970 + i // 12:04d}-{i % 12 + 1:02d}-01 00:00:00 UTC"
            decoded = _decode(by_period[period][j], median)
            assert math.isclose(decoded, true[i], rel_tol=1e-8), (name, period)


def _is_dotted(name: str) -> bool:
    return next(r for r in sample._RULES if name.startswith(r[0]))[7] == "dot"


def test_write_sample_readable_by_pandas(tmp_path: pathlib.Path) -> None:
    pd = pytest.importorskip("pandas")
    paths = sample.write_sample(tmp_path / "raw", seed=0)
    assert [p.name for p in paths] == list(sample.SAMPLE_FILES)
    for path in paths:
        assert path.read_bytes() == sample.sample_files(0)[path.name]
    frames = {p.name: pd.read_csv(p) for p in paths}
    assert frames["precio_leche.csv"].shape == (506, 3)
    assert frames["precipitaciones.csv"].shape == (496, 9)
    assert frames["banco_central.csv"].shape == (613, 85)
    assert frames["precio_leche.csv"]["Precio_leche"].dtype.kind == "f"


def test_main_writes_files(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sample.main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / name) for name in sample.SAMPLE_FILES]
    assert all((tmp_path / name).is_file() for name in sample.SAMPLE_FILES)
