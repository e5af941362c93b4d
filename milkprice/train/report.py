"""The backtest table and chart written beside each model."""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.figure import Figure


def backtest_table(actual: pd.Series, predictions: dict[str, pd.Series]) -> pd.DataFrame:
    table = pd.DataFrame({"actual": actual})
    for name, series in predictions.items():
        table[name] = series.reindex(actual.index)
    table.index = table.index.astype(str)
    table.index.name = "month"
    return table


def to_csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(float_format="%.4f").encode()


def chart(table: pd.DataFrame, served: dict[str, str]) -> bytes:
    """Actual price against the served models' one-step-ahead forecasts and the naive one."""
    # The object API, not pyplot: two trainings may draw at once in one process.
    fig = Figure(figsize=(9, 4.5), dpi=100)
    ax = fig.add_subplot()
    x = pd.PeriodIndex(table.index, freq="M").to_timestamp()
    if "selection" in table and not table["selection"].all():
        chosen = x[table["selection"].to_numpy() == 1]
        ax.axvspan(
            chosen.min(), chosen.max(), color="0.93", label="months the models are chosen on"
        )
    ax.plot(x, table["actual"], color="black", linewidth=2, label="actual price", marker="o")
    ax.plot(x, table["naive"], color="0.6", linestyle="--", label="naive: last month's price")
    styles = {"forecast": "tab:blue", "legacy": "tab:orange"}
    if "forecast_lower" in table:
        ax.fill_between(
            x,
            table["forecast_lower"],
            table["forecast_upper"],
            color="tab:blue",
            alpha=0.15,
            label="forecast model: 80% interval",
        )
    for role, name in served.items():
        if name != "naive":
            ax.plot(x, table[name], color=styles[role], label=f"{role} model: {name}", marker=".")
    ax.set_ylabel("CLP per litre")
    ax.set_title(f"Milk producer price: one-step-ahead backtest, {len(table)} months")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
