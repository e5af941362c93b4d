"""The milkprice command as a user runs it: clear tables, one-line errors, non-zero exits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from milkprice import contract, store
from milkprice.settings import Settings
from tests.support.buckets import first_release, new_settings, promote, upload
from tests.support.pages import printed, shown_forecast
from tests.support.paths import ROOT
from tests.support.servers import Function, call, env_for

pytestmark = pytest.mark.slow


def milkprice(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "milkprice.local.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def served(
    gcs: str, tmp_path: Path, sample_raw: dict[str, bytes]
) -> Iterator[tuple[Settings, dict[str, str]]]:
    settings = new_settings(backtest_months=6)
    upload(settings, sample_raw)
    env = env_for(settings, gcs, tmp_path, MILKPRICE_TRAIN_TOKEN="cli-token")
    trainer = Function("train_http", "train", env)
    predict = Function("predict", "predict", env)
    env.update(MILKPRICE_TRAIN_URL=trainer.url, MILKPRICE_PREDICT_PORT=str(predict.port))
    yield settings, env
    trainer.stop()
    predict.stop()


def test_train_status_models_rollback_predict(
    served: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = served
    first = milkprice("train", env=env)
    assert first.returncode == 0, first.stderr
    assert "promoted" in first.stdout and "training through" in first.stdout
    second = milkprice("train", env=env)
    assert second.returncode == 0, second.stderr
    versions = contract.versions(settings)
    assert len(versions) == 2

    status = milkprice("status", env=env)
    assert status.returncode == 0 and f"serving version {versions[1]}" in status.stdout
    assert (
        "forecast" in status.stdout and "legacy" in status.stdout and "naive rmse" in status.stdout
    )
    assert status.stdout.count("promoted") >= 2  # the runs table

    models = milkprice("models", env=env)
    assert f"* {versions[1]}" in models.stdout and f"  {versions[0]}" in models.stdout
    # a reader that leaves before the answer (a pager quit, `| head`): no traceback, no error
    cut = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{sys.executable} -m milkprice.local.cli status | true"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cut.returncode == 0 and cut.stderr == "", cut.stderr

    back = milkprice("rollback", versions[0], env=env)
    assert back.returncode == 0, back.stderr
    assert contract.read_pointer(settings)[0].version == versions[0]  # type: ignore[index]

    manifest = contract.read_manifest(settings, versions[0])
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"data": [manifest.next.features]}))
    time.sleep(0.6)  # the predict function notices the rollback within its interval
    answer = milkprice("predict", str(request), env=env)
    assert answer.returncode == 0, answer.stderr
    assert len(json.loads(answer.stdout)) == 1

    path = manifest.path
    assert path is not None
    whole = milkprice("forecast", env=env)
    assert whole.returncode == 0, whole.stderr
    assert f"model version {versions[0]}" in whole.stdout
    for month in path.months:  # one row a month: month, price, lower, upper
        cells = [month.month, f"{month.price:.2f}", f"{month.lower:.2f}", f"{month.upper:.2f}"]
        assert re.search(r"\s+".join(map(re.escape, cells)), whole.stdout), cells
    three = milkprice("forecast", "--months", "3", env=env)
    assert three.returncode == 0, three.stderr
    assert three.stdout.count("\n") == 3 + 3  # the title, the header and its rule, 3 months
    assert path.months[2].month in three.stdout and path.months[3].month not in three.stdout
    bad = milkprice("forecast", "--months", "13", env=env)
    assert bad.returncode == 1 and "from 1 to 12" in bad.stderr and not bad.stdout


@pytest.fixture(params=["path", "first release"])
def serving(
    request: pytest.FixtureRequest, gcs: str, trained_sample: tuple[Settings, dict[str, Any]]
) -> tuple[Settings, bool]:
    """A bucket serving a model with a forecast path, or the first release's, from before it;
    and whether it has the path."""
    if request.param == "path":
        return trained_sample[0], True
    settings = new_settings(backtest_months=6)
    promote(settings, first_release(settings))
    return settings, False


def test_one_month_has_one_forecast_in_the_function_and_the_cli(
    serving: tuple[Settings, bool], gcs: str, tmp_path: Path
) -> None:
    settings, has_path = serving
    env = env_for(settings, gcs, tmp_path)
    predict = Function("predict", "predict", env)
    try:
        env["MILKPRICE_PREDICT_PORT"] = str(predict.port)
        status, alone = call(predict.url + "forecast", method="GET")
        assert status == 200, alone
        page = call(predict.url, method="GET")[1].decode()
        status, path = call(predict.url + "forecast?months=12", method="GET")
        first_month = milkprice("forecast", "--months", "1", env=env)
        whole = milkprice("forecast", env=env)
        shown = milkprice("status", env=env)
    finally:
        predict.stop()
    expected = printed(alone)
    assert shown_forecast(page) == expected
    tables = [whole]
    if has_path:
        assert status == 200 and path["months"][0] == {
            k: alone[k] for k in ("month", "price", "interval")
        }
        tables.append(first_month)
    else:  # a model from before the path: the command falls back to /forecast, and says so
        assert status == 409 and "predates the forecast path" in whole.stderr
        assert first_month.returncode == 1 and "predates" in first_month.stderr  # as asked
    row = [expected[k] for k in ("month", "price", "lower", "upper")]
    for table in tables:  # the title, the header and its rule, then the month
        assert table.returncode == 0 and table.stdout.splitlines()[3].split() == row
    what = "the forecast path's first month" if has_path else "the forecast model's"
    line = (
        f"next month's forecast, {row[0]}: {row[1]} CLP per litre, 80% interval {row[2]} to "
        f"{row[3]} ({what})"
    )
    assert shown.returncode == 0 and line in shown.stdout.splitlines(), shown.stdout


def test_errors_are_one_line_and_fail(
    served: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    _, env = served
    cases = [
        (("rollback", "no-such-version"), "no model version no-such-version"),
        (("upload", str(tmp_path / "missing.csv")), "no such file"),
        (("predict", str(tmp_path / "missing.json")), "missing.json"),
    ]
    wrong_name = tmp_path / "prices.csv"
    wrong_name.write_text("a,b\n1,2\n")
    cases.append((("upload", str(wrong_name)), "raw files are named"))
    bad_request = tmp_path / "bad.json"
    bad_request.write_text(json.dumps({"data": [{"nothing": 1}]}))
    # nothing is trained in this bucket yet: the answer says so
    cases.append((("predict", str(bad_request)), "no model has been promoted yet"))
    no_token = {k: v for k, v in env.items() if k != "MILKPRICE_TRAIN_TOKEN"}
    no_token["MILKPRICE_STATE_DIR"] = str(tmp_path / "empty-state")
    for args, words in cases:
        result = milkprice(*args, env=env)
        assert result.returncode == 1, (args, result.stdout)
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    unauthorized = milkprice("train", env=no_token)
    assert unauthorized.returncode == 1 and "401" in unauthorized.stderr
    down = {**env, "MILKPRICE_TRAIN_URL": "http://127.0.0.1:9/"}
    result = milkprice("train", env=down)
    assert result.returncode == 1 and "cannot reach" in result.stderr


def test_upload_writes_raw_files(
    served: tuple[Settings, dict[str, str]], tmp_path: Path, sample_raw: dict[str, bytes]
) -> None:
    settings, env = served
    path = tmp_path / "precio_leche.csv"
    path.write_bytes(sample_raw["precio_leche.csv"] + b"\n")
    result = milkprice("upload", str(path), env=env)
    assert result.returncode == 0 and "(version " in result.stdout
    blob = store.read(settings, "raw/precio_leche.csv")
    assert blob is not None and blob.data == path.read_bytes()


@pytest.mark.long
def test_evaluate_scores_every_candidate_on_local_files(tmp_path: Path) -> None:
    from milkprice.local import sample

    sample.write_sample(tmp_path / "data")
    env = {
        "PATH": "/usr/bin:/bin",
        "MILKPRICE_BACKTEST_MONTHS": "6",
        "MILKPRICE_LONG_BACKTEST_MONTHS": "12",
    }
    out = tmp_path / "figures.json"
    done = milkprice("evaluate", "--data", str(tmp_path / "data"), "--json", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert "backtest 1/" in done.stderr  # progress while it works
    figures = json.loads(out.read_text())
    assert len(figures["backtest_months"]) == 6 and len(figures["long_months"]) == 12
    naive = next(c for c in figures["candidates"] if c["name"] == "naive")
    for c in figures["candidates"]:
        line = next(x for x in done.stdout.splitlines() if x.startswith(c["name"] + " "))
        assert f"{c['rmse']:.3f}" in line and f"{c['rmse'] / naive['rmse']:.3f}" in line
        if "long" in c:
            assert len(c["long"]) and f"{c['long']['rmse']:.3f}" in line
    chosen = figures["models"]["forecast"]
    assert f"forecast model: {chosen['candidate']}" in done.stdout
    assert "RMSE 12 mo" in done.stdout and "interval held the actual price" in done.stdout


def test_evaluate_names_a_missing_file(tmp_path: Path) -> None:
    done = milkprice("evaluate", "--data", str(tmp_path), env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("milkprice evaluate: ")
    assert "precio_leche.csv" in done.stderr and "Traceback" not in done.stderr
