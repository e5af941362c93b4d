"""Deterministic sample raw data in the exact CSV formats of the real milk-price files.

Values are synthetic; only formats, column names, date ranges and export traps are real.
"""

from __future__ import annotations

import csv
import io
import math
import os
import pathlib
import sys

import numpy as np

from milkprice.errors import MilkPriceError
from milkprice.schema import IMACEC_SERIES, MONTHS_ES, PIB_SERIES, RAW_FILES, REGIONS

SAMPLE_FILES: tuple[str, ...] = RAW_FILES
MESES = MONTHS_ES
_P = "Ocupacion_en_"
BANCO_COLUMNS: tuple[str, ...] = (
    "Periodo",
    *IMACEC_SERIES,
    *PIB_SERIES[:-1],
    "Impuesto_al_valor_agregado",
    "Derechos_de_Importacion",
    "PIB",
    "Precio_de_la_gasolina_en_EEUU_dolaresm3",
    "Precio_de_la_onza_troy_de_oro_dolaresoz",
    "Precio_de_la_onza_troy_de_plata_dolaresoz",
    "Precio_del_cobre_refinado_BML_dolareslibra",
    "Precio_del_diesel_centavos_de_dolargalon",
    "Precio_del_gas_natural_dolaresmillon_de_unidades_termicas_britanicas",
    "Precio_del_petroleo_Brent_dolaresbarril",
    "Precio_del_kerosene_dolaresm3",
    "Precio_del_petroleo_WTI_dolaresbarril",
    "Precio_del_propano_centavos_de_dolargalon_DTN",
    "Tipo_de_cambio_del_dolar_observado_diario",
    "Ocupados",
    _P + "Agricultura_INE",
    _P + "Explotacion_de_minas_y_canteras_INE",
    _P + "Industrias_manufactureras_INE",
    _P + "Suministro_de_electricidad_INE",
    _P + "Actividades_de_servicios_administrativos_y_de_apoyo_INE",
    _P + "Actividades_profesionales_INE",
    _P + "Actividades_inmobiliarias_INE",
    _P + "Actividades_financieras_y_de_seguros_INE",
    _P + "Informacion_y_comunicaciones_INE",
    _P + "Transporte_y_almacenamiento_INE",
    _P + "Actividades_de_alojamiento_y_de_servicio_de_comidas_INE",
    _P + "Construccion_INE",
    _P + "Comercio_INE",
    _P + "Suministro_de_agua_evacuacion_de_aguas_residuales_INE",
    _P + "Administracion_publica_y_defensa_INE",
    _P + "Enseanza_INE",
    _P + "Actividades_de_atencion_de_la_salud_humana_y_de_asistencia_social_INE",
    _P + "Actividades_artisticas_INE",
    _P + "Otras_actividades_de_servicios_INE",
    _P + "Actividades_de_los_hogares_como_empleadores_INE",
    _P + "Actividades_de_organizaciones_y_organos_extraterritoriales_INE",
    "No_sabe__No_responde_Miles_de_personas",
    "Tipo_de_cambio_nominal_multilateral___TCM",
    "Indice_de_tipo_de_cambio_real___TCR_promedio_1986_100",
    "Indice_de_produccion_industrial",
    "Indice_de_produccion_industrial__mineria",
    "Indice_de_produccion_industrial_electricidad__gas_y_agua",
    "Indice_de_produccion_industrial__manufacturera",
    "Generacion_de_energia_electrica_CDEC_GWh",
    "Indice_de_ventas_comercio_real_IVCM",
    "Indice_de_ventas_comercio_real_no_durables_IVCM",
    "Indice_de_ventas_comercio_real_durables_IVCM",
    "Ventas_autos_nuevos",
)
# First matching prefix wins: (prefix, first month, last month, value at first month, value at
# last month, seasonal amplitude, monthly noise, format). A negative first value means "own
# magnitude drawn log-uniformly in [-a, b]". Format "dot" = encode_dotted, a digit = decimals.
_RULES: tuple[tuple[str, str, str, float, float, float, float, str], ...] = (
    ("Imacec_", "1996-01", "2020-10", 62, 118, 0.05, 0.01, "dot"),
    ("PIB_a_costo", "2013-01", "2020-09", 10300, 11900, 0.04, 0.01, "dot"),
    ("PIB_", "2013-01", "2020-09", -50, 2000, 0.08, 0.01, "dot"),
    ("PIB", "2013-01", "2020-09", 11400, 13100, 0.04, 0.01, "dot"),
    ("Impuesto", "2013-01", "2020-09", 800, 1000, 0.05, 0.01, "dot"),
    ("Derechos", "2013-01", "2020-09", 50, 70, 0.06, 0.01, "dot"),
    ("Precio_de_la_gasolina", "1971-08", "2020-11", 130, 460, 0.03, 0.012, "dot"),
    ("Precio_de_la_onza_troy_de_oro", "1970-01", "2020-11", 36, 1850, 0, 0.04, "2"),
    ("Precio_de_la_onza_troy_de_plata", "1970-01", "2020-11", 1.8, 24, 0, 0.05, "3"),
    ("Precio_del_cobre", "1970-01", "2020-11", 0.7, 3.6, 0, 0.014, "dot"),
    ("Precio_del_diesel", "2006-10", "2020-11", 200, 170, 0.03, 0.05, "2"),
    ("Precio_del_gas_natural", "2000-01", "2020-11", 3.5, 3.0, 0.1, 0.07, "4"),
    ("Precio_del_petroleo_Brent", "2000-01", "2020-11", 30, 45, 0, 0.06, "2"),
    ("Precio_del_kerosene", "2000-01", "2020-11", 200, 380, 0.02, 0.012, "dot"),
    ("Precio_del_petroleo_WTI", "1983-05", "2020-11", 28, 42, 0, 0.05, "2"),
    ("Precio_del_propano", "2008-01", "2020-11", 140, 55, 0.05, 0.05, "3"),
    ("Tipo_de_cambio_del_dolar", "1982-08", "2020-11", 520, 700, 0, 0.01, "dot"),
    ("Ocupados", "2010-03", "2020-10", 7600, 9000, 0.01, 0.005, "dot"),
    ("Ocupacion_", "2013-03", "2020-10", -20, 2000, 0.03, 0.01, "dot"),
    ("No_sabe", "2020-01", "2020-10", 30, 50, 0, 0.02, "dot"),
    ("Tipo_de_cambio_nominal", "1995-01", "2020-11", 85, 110, 0, 0.01, "dot"),
    ("Indice_de_tipo_de_cambio_real", "1986-01", "2020-10", 80, 100, 0, 0.01, "dot"),
    ("Indice_de_produccion_industrial__mineria", "1990-01", "2020-10", 70, 100, 0.04, 0.01, "dot"),
    ("Indice_de_produccion_industrial_elec", "2014-01", "2020-10", 95, 110, 0.05, 0.01, "dot"),
    ("Indice_de_produccion_industrial__manu", "1991-01", "2020-10", 65, 100, 0.05, 0.01, "dot"),
    ("Indice_de_produccion_industrial", "2009-01", "2020-10", 92, 104, 0.05, 0.01, "dot"),
    ("Generacion", "1999-01", "2020-10", 3500, 6800, 0.04, 0.01, "dot"),
    ("Indice_de_ventas", "2014-01", "2020-10", 85, 125, 0.08, 0.01, "dot"),
    ("Ventas_autos", "2009-01", "2020-11", 18000, 30000, 0.15, 0.03, "0"),
)


def encode_dotted(value: float, sig: int = 9) -> str:
    """Write ``value`` as the banco_central export did: ``sig`` significant digits, decimal
    point dropped, trailing zeros stripped, dots every 3 digits from the right."""
    digits = f"{abs(value):.{sig - 1}e}".split("e")[0].replace(".", "").rstrip("0") or "0"
    groups = [digits[max(i - 3, 0) : i] for i in range(len(digits), 0, -3)]
    return ("-" if value < 0 else "") + ".".join(reversed(groups))


def _month_index(ym: str) -> int:
    """Months since 1970-01 of a ``YYYY-MM`` string."""
    return (int(ym[:4]) - 1970) * 12 + int(ym[5:7]) - 1


def _months(first: str, last: str) -> list[tuple[int, int]]:
    """(year, month) pairs from ``first`` to ``last`` inclusive."""
    span = range(_month_index(first), _month_index(last) + 1)
    return [(1970 + i // 12, i % 12 + 1) for i in span]


def _ar(rng: np.random.Generator, n: int, vol: float, phi: float) -> np.ndarray:
    """AR(1) path starting at 0 with innovation standard deviation ``vol``."""
    eps, out = rng.normal(0.0, vol, size=n), np.zeros(n)
    for k in range(1, n):
        out[k] = phi * out[k - 1] + eps[k]
    return out


def _csv_bytes(header: tuple[str, ...], rows: list[list[str]]) -> bytes:
    """CSV text (``\\n`` line ends) encoded as UTF-8."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode("utf-8")


def _rain(rng: np.random.Generator) -> bytes:
    """precipitaciones.csv: gamma rainfall with a wet winter, rows shuffled."""
    months = _months("1979-01", "2020-04")
    mean, shape, amp = np.array(
        [
            [8, 22, 28, 45, 65, 95, 110, 160],  # mm/month, north -> south
            [0.7, 0.8, 0.8, 1.0, 1.3, 1.8, 2.4, 3.2],
            [0.95, 0.9, 0.9, 0.85, 0.8, 0.7, 0.6, 0.55],
        ]
    )
    wet_year = rng.lognormal(0.0, 0.2, size=2021 - 1979)
    rows = []
    for year, month in months:
        mu = mean * (1 + amp * math.cos(2 * math.pi * (month - 6.5) / 12)) * wet_year[year - 1979]
        mm = rng.gamma(shape, mu / shape)
        mm[mm < 0.02] = 0.0
        rows.append([f"{year:04d}-{month:02d}-01"] + [f"{x:.15g}" for x in mm])
    order = rng.permutation(len(rows))
    return _csv_bytes(("date", *REGIONS), [rows[i] for i in order])


def _banco_values(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """True (decoded) values of every banco_central series on 1970-01..2020-11, NaN if absent."""
    n = _month_index("2020-11") + 1
    out: dict[str, np.ndarray] = {}
    for name in BANCO_COLUMNS[1:]:
        _, first, last, a, b, amp, vol, _ = next(r for r in _RULES if name.startswith(r[0]))
        if a < 0:
            mag = math.exp(rng.uniform(math.log(-a), math.log(b)))
            a, b = 0.9 * mag, 1.12 * mag
        i0, i1 = _month_index(first), _month_index(last)
        t = np.arange(i1 - i0 + 1)
        noise = np.clip(_ar(rng, len(t), vol, 0.95), -12.8 * vol, 12.8 * vol)
        season = amp * np.cos(2 * np.pi * ((t + i0) % 12 - rng.integers(12)) / 12)
        log_v = np.log(a) + (np.log(b) - np.log(a)) * t / max(len(t) - 1, 1) + season + noise
        values = np.full(n, np.nan)
        values[i0 : i1 + 1] = np.exp(log_v)
        out[name] = values
    return out


def _fmt(fmt: str, value: float) -> str:
    """One banco_central cell: empty, dotted, or plain with trailing zeros stripped."""
    text = "" if math.isnan(value) else encode_dotted(value) if fmt == "dot" else f"{value:.{fmt}f}"
    return text.rstrip("0").rstrip(".") if fmt != "dot" and "." in text else text


def _banco(rng: np.random.Generator) -> bytes:
    """banco_central.csv: shuffled rows, one duplicated and one unparsable period."""
    values = _banco_values(rng)
    names = BANCO_COLUMNS[1:]
    fmts = [next(r for r in _RULES if c.startswith(r[0]))[7] for c in names]
    rows = [
        [f"{y:04d}-{m:02d}-01 00:00:00 UTC"]
        + [_fmt(f, float(values[c][i])) for c, f in zip(names, fmts, strict=True)]
        for i, (y, m) in enumerate(_months("1970-01", "2020-11"))
    ]
    rows.append(list(rows[_month_index("2018-08")]))
    keep = rng.random(len(names)) < 0.3  # the malformed month repeats some 2020-10 cells
    last = zip(rows[_month_index("2020-10")][1:], keep, strict=True)
    rows.append(["2020-13-01 00:00:00 UTC"] + [v if k else "" for v, k in last])
    order = rng.permutation(len(rows))
    return _csv_bytes(BANCO_COLUMNS, [rows[i] for i in order])


def _milk(rng: np.random.Generator, end: str) -> bytes:
    """precio_leche.csv: inflation trend x winter-high seasonality x AR(0.97) noise."""
    months = _months("1979-01", end)
    t = np.arange(len(months))
    trend = np.log(4.0) + 0.0042 * t + 0.025 * 90 * (1 - np.exp(-t / 90))
    season = 0.06 * np.cos(2 * np.pi * (t % 12 + 1 - 6) / 12)
    price = np.exp(trend + season + _ar(rng, len(t), 0.012, 0.97))
    rows = [[str(y), MESES[m - 1], f"{p:.2f}"] for (y, m), p in zip(months, price, strict=True)]
    return _csv_bytes(("Anio", "Mes", "Precio_leche"), rows)


def sample_files(seed: int = 0, end: str = "2021-02") -> dict[str, bytes]:
    """Sample raw files (name -> CSV bytes); ``end`` is the last milk-price month."""
    milk, rain, banco = np.random.default_rng(seed).spawn(3)  # independent streams per file
    return dict(zip(SAMPLE_FILES, (_milk(milk, end), _rain(rain), _banco(banco)), strict=True))


def write_sample(directory: str | os.PathLike[str], seed: int = 0) -> list[pathlib.Path]:
    """Write the three sample files into ``directory`` (created if needed); return their paths."""
    folder = pathlib.Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in sample_files(seed).items():
        (folder / name).write_bytes(content)
    return [folder / name for name in SAMPLE_FILES]


def read_folder(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """The three raw files of a folder (as ``write_sample`` writes them), name -> bytes."""
    folder = pathlib.Path(directory)
    missing = [name for name in RAW_FILES if not (folder / name).is_file()]
    if missing:
        raise MilkPriceError(f"{folder} lacks {', '.join(missing)}")
    return {name: (folder / name).read_bytes() for name in RAW_FILES}


def main(argv: list[str] | None = None) -> int:
    """``python -m milkprice.local.sample DIR [SEED]``: write the sample files, print paths."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m milkprice.local.sample DIR [SEED]")
    for path in write_sample(args[0], int(args[1]) if len(args) > 1 else 0):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
