"""Raw files gone wrong, each as a user could upload it, with what the run must say of it."""

from __future__ import annotations

from milkprice import store


def bad_files(good: dict[str, bytes]) -> list[tuple[str, str, bytes, tuple[str, ...]]]:
    """(case, file, bytes, words the run's reason must contain)."""
    milk, rain, macro = (good[n] for n in store.RAW_FILES)
    milk_lines = milk.decode().splitlines()
    big_row = (milk_lines[1] + "\n").encode()
    return [
        ("empty file", "precio_leche.csv", b"", ("precio_leche.csv", "empty")),
        (
            "header only",
            "precipitaciones.csv",
            rain.split(b"\n")[0] + b"\n",
            ("precipitaciones.csv", "no data rows"),
        ),
        (
            "truncated mid-row",
            "precipitaciones.csv",
            rain[: len(rain) // 2],
            ("precipitaciones.csv", "row", "fields"),
        ),
        (
            "semicolon delimiter",
            "precio_leche.csv",
            milk.replace(b",", b";"),
            ("precio_leche.csv", "';'"),
        ),
        (
            "latin-1 bytes",
            "precio_leche.csv",
            milk.replace(b"Ene", "Ené".encode("latin-1")),
            ("precio_leche.csv", "not UTF-8", "row 2"),
        ),
        (
            "missing column",
            "banco_central.csv",
            macro.replace(b",Imacec_minero,", b",", 1),
            ("banco_central.csv", "Imacec_minero", "missing column"),
        ),
        (
            "renamed column",
            "precio_leche.csv",
            milk.replace(b"Precio_leche", b"Precio", 1),
            ("precio_leche.csv", "Precio_leche", "missing column"),
        ),
        (
            "text in a numeric column",
            "precio_leche.csv",
            milk.replace(
                milk_lines[5].encode(), milk_lines[5].rsplit(",", 1)[0].encode() + b",n/a"
            ),
            ("precio_leche.csv", "Precio_leche", "row 6", "'n/a' is not a number"),
        ),
        (
            "duplicated month, other values",
            "precio_leche.csv",
            milk + milk_lines[3].rsplit(",", 1)[0].encode() + b",1.5\n",
            ("precio_leche.csv", "different values"),
        ),
        (
            "dates far in the future",
            "precipitaciones.csv",
            rain + b"2099-01-01" + b",1" * 8 + b"\n",
            ("precipitaciones.csv", "future"),
        ),
        (
            "a file of 50 MB",
            "banco_central.csv",
            macro + big_row * (50_000_000 // len(big_row)),
            ("banco_central.csv", "MB"),
        ),
        (
            "milk file under the rainfall name",
            "precipitaciones.csv",
            milk,
            ("precipitaciones.csv", "missing column", "date", "Anio"),
        ),
        (
            "not a CSV at all",
            "banco_central.csv",
            bytes(range(256)) * 10,
            ("banco_central.csv", "not UTF-8"),
        ),
    ]
