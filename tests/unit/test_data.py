"""Cleaning rules on the real files, and every validation error on broken copies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from milkprice.errors import DataError
from milkprice.train import data
from milkprice.train.features import REQUIRED_MACRO
from tests.support.buckets import TODAY


def clean(raw: dict[str, bytes]) -> data.CleanData:
    return data.clean(raw, REQUIRED_MACRO, TODAY)


# ---------------------------------------------------------------- the real files


@pytest.fixture(scope="module")
def real(real_raw: dict[str, bytes]) -> data.CleanData:
    return clean(real_raw)


def test_real_files_clean_with_their_traps_counted(real: data.CleanData) -> None:
    assert len(real.milk) == 506  # every month from 1979-01 to 2021-02
    assert str(real.milk.index.min()) == "1979-01" and str(real.milk.index.max()) == "2021-02"
    assert real.milk.index.is_monotonic_increasing
    assert real.rain.index.is_monotonic_increasing and len(real.rain) == 496
    macro = real.counts[data.MACRO]
    assert macro["unparsable_periods_dropped"] == 1  # 2020-13-01
    assert macro["duplicate_periods_dropped"] == 2  # 2018-08 and 2019-08, identical twice
    assert macro["placeholder_cells"] == 17  # the footnote mark 'a'
    assert real.macro.index.is_unique


def test_dotted_numbers_decode_per_family(real: data.CleanData) -> None:
    m = real.macro
    # The README's example: 102.796.218 is an Imacec of about 102.796.
    assert m.loc["2013-03", "Imacec_empalmado"] == pytest.approx(102.796218)
    # 10.546.824 in an index family is 105.46824, not 10.5 (sanity range and centre 100).
    assert m.loc["2013-03", "Imacec_produccion_de_bienes"] == pytest.approx(105.46824)
    # 5.691.837 lost a trailing zero: same scale as its neighbours 565.071.466, 571.394.036.
    fin = m["PIB_Servicios_financieros"].dropna()
    assert fin.loc["2013-03"] == pytest.approx(569.1837)
    # A plain number that is a reading stays as written (a decimal point that survived).
    assert m.loc["2020-03", "PIB_Industria_Manufacturera"] == pytest.approx(1358.56)
    # Copper in 1970 was written 738 for 0.738 dollars a pound.
    assert m.loc["1970-01", "Precio_del_cobre_refinado_BML_dolareslibra"] == pytest.approx(0.738)


def test_every_decoded_series_is_smooth_and_in_range(real: data.CleanData) -> None:
    for column in real.macro.columns:
        rule = data.rule_for(column)
        assert rule is not None
        values = real.macro[column].dropna()
        assert ((values >= rule.low) & (values <= rule.high)).all(), column
        if (values == 0).any():
            continue  # a series of a few thousand people that really drops to zero
        positive = values
        ratio = (positive / positive.shift(1)).dropna()
        if len(ratio):
            # a wrong power of ten would show as a month-to-month jump of about 10x
            assert ratio.max() < 4 and ratio.min() > 0.25, column


def test_decode_series_prefers_the_smooth_path() -> None:
    rule = data.Rule("test", 0.1, 1e6, None, 300)
    values = data.decode_series(["565.071.466", "5.691.837", "571.394.036"], rule)
    assert values == pytest.approx([565.071466, 569.1837, 571.394036])
    assert data.decode_series(["1.5"], data.Rule("t", 10, 20, 15)) == [15.0]
    assert math.isnan(data.decode_series(["3"], data.Rule("t", 10, 20, 15))[0])


def test_sample_files_clean(sample_raw: dict[str, bytes]) -> None:
    c = clean(sample_raw)
    assert c.counts[data.MACRO]["unparsable_periods_dropped"] == 1
    assert c.counts[data.MACRO]["duplicate_periods_dropped"] == 1
    assert np.isfinite(c.milk).all()


# ---------------------------------------------------------------- bad input


def _replace(raw: dict[str, bytes], name: str, payload: bytes) -> dict[str, bytes]:
    return {**raw, name: payload}


def _lines(raw: dict[str, bytes], name: str) -> list[str]:
    return raw[name].decode().splitlines()


def _edit_line(raw: dict[str, bytes], name: str, line: int, new: str) -> dict[str, bytes]:
    lines = _lines(raw, name)
    lines[line - 1] = new
    return _replace(raw, name, ("\n".join(lines) + "\n").encode())


def _bad_cases(
    raw: dict[str, bytes],
) -> dict[str, tuple[dict[str, bytes], str, str | None, int | None, str]]:
    milk = _lines(raw, data.MILK)
    rain = _lines(raw, data.RAIN)
    return {
        # case: (files, file, column, row, words in the message)
        "empty": (_replace(raw, data.MILK, b""), data.MILK, None, None, "empty"),
        "header only": (
            _replace(raw, data.RAIN, rain[0].encode() + b"\n"),
            data.RAIN,
            None,
            None,
            "no data rows",
        ),
        "not utf-8": (
            _replace(raw, data.MILK, raw[data.MILK].replace(b"Ene", "Ené".encode("latin-1"), 1)),
            data.MILK,
            None,
            2,
            "not UTF-8",
        ),
        "semicolons": (
            _replace(raw, data.MILK, raw[data.MILK].replace(b",", b";")),
            data.MILK,
            None,
            1,
            "';'",
        ),
        "missing column": (
            _replace(raw, data.MACRO, raw[data.MACRO].replace(b",PIB_Pesca,", b",", 1)),
            data.MACRO,
            "PIB_Pesca",
            1,
            "missing column",
        ),
        "renamed column": (
            _replace(raw, data.MILK, raw[data.MILK].replace(b"Precio_leche", b"Precio", 1)),
            data.MILK,
            "Precio_leche",
            1,
            "Precio",
        ),
        "text in a number": (
            _edit_line(raw, data.MILK, 10, milk[9].rsplit(",", 1)[0] + ",abc"),
            data.MILK,
            "Precio_leche",
            10,
            "'abc' is not a number",
        ),
        "text in a macro number": (
            _replace(raw, data.MACRO, raw[data.MACRO].replace(b"\n", b"\n", 1)),
            data.MACRO,
            None,
            None,
            "",
        ),
        "truncated row": (
            _replace(raw, data.RAIN, raw[data.RAIN][: raw[data.RAIN].rfind(b",", 0, -2)]),
            data.RAIN,
            None,
            len(rain),
            "fields",
        ),
        "duplicated month, other value": (
            _replace(
                raw, data.MILK, raw[data.MILK] + (milk[5].rsplit(",", 1)[0] + ",999.5\n").encode()
            ),
            data.MILK,
            "Precio_leche",
            len(milk) + 1,
            "different values",
        ),
        "month in the future": (
            _replace(raw, data.MILK, raw[data.MILK] + b"2031,Ene,300.1\n"),
            data.MILK,
            "Anio",
            len(milk) + 1,
            "future",
        ),
        "milk under the rainfall name": (
            _replace(raw, data.RAIN, raw[data.MILK]),
            data.RAIN,
            "date",
            1,
            "Anio",
        ),
        "negative price": (
            _edit_line(raw, data.MILK, 4, milk[3].rsplit(",", 1)[0] + ",-3"),
            data.MILK,
            "Precio_leche",
            4,
            "sane range",
        ),
        "no overlap": (
            _replace(
                raw,
                data.MILK,
                ("\n".join([milk[0], "1950,Ene,1.0", "1950,Feb,1.1"]) + "\n").encode(),
            ),
            data.MACRO,
            None,
            None,
            "no month is covered by all three files",
        ),
    }


CASES = [
    "empty",
    "header only",
    "not utf-8",
    "semicolons",
    "missing column",
    "renamed column",
    "text in a number",
    "truncated row",
    "duplicated month, other value",
    "month in the future",
    "milk under the rainfall name",
    "negative price",
    "no overlap",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_names_file_column_and_row(case: str, sample_raw: dict[str, bytes]) -> None:
    files, file, column, row, words = _bad_cases(sample_raw)[case]
    with pytest.raises(DataError) as caught:
        clean(files)
    err = caught.value
    assert err.file == file
    assert err.column == column
    assert err.row == row
    assert words in err.message
    assert file in err.message and err.status == 422


def test_text_in_a_macro_cell_names_column_and_line(sample_raw: dict[str, bytes]) -> None:
    lines = _lines(sample_raw, data.MACRO)
    header = lines[0].split(",")
    col = header.index("Imacec_empalmado")
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split(",")
        if cells[col]:
            cells[col] = "12x"
            files = _edit_line(sample_raw, data.MACRO, n, ",".join(cells))
            break
    with pytest.raises(DataError) as caught:
        clean(files)
    assert (caught.value.column, caught.value.row) == ("Imacec_empalmado", n)
    assert "'12x' is not a number" in caught.value.message


def test_duplicated_macro_period_with_other_values_stops(sample_raw: dict[str, bytes]) -> None:
    lines = _lines(sample_raw, data.MACRO)
    header = lines[0].split(",")
    col = header.index("Imacec_empalmado")
    row = next(line for line in lines[1:] if line.split(",")[col] and line.startswith("2015"))
    cells = row.split(",")
    cells[col] = "1.234.567"
    files = _replace(
        sample_raw, data.MACRO, sample_raw[data.MACRO] + (",".join(cells) + "\n").encode()
    )
    with pytest.raises(DataError) as caught:
        clean(files)
    assert caught.value.row == len(lines) + 1 and "different values" in caught.value.message


def test_missing_file() -> None:
    with pytest.raises(DataError) as caught:
        data.clean({}, REQUIRED_MACRO, TODAY)
    assert caught.value.file == data.MILK
