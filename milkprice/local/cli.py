"""The ``milkprice`` command: run the local stack and talk to the system as a user would.

Every error is one clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milkprice import accuracy as live
from milkprice import contract, store
from milkprice import http_client as http
from milkprice.errors import MilkPriceError
from milkprice.settings import LOG_FORMATS, LocalSettings

if TYPE_CHECKING:  # imported where used: each command loads only what it needs
    from milkprice.bridge import watcher
    from milkprice.local import s3_queue
    from milkprice.train.core import Trained


def _token(settings: LocalSettings) -> str:
    """The train token: the setting, else the one ``make up`` keeps (an empty file fails)."""
    from milkprice.local.stack import read_token

    if settings.train_token:
        return settings.train_token
    path = settings.state_path("train-token")
    return read_token(path) if path.exists() else ""


def _http(url: str, body: Any, token: str = "", timeout: float = 900) -> tuple[int, Any]:
    """POST ``body`` as JSON; (status, parsed answer); no answer at all is one clear line."""
    answer = http.post_json(url, body, token, timeout)
    if answer.status == 0:
        raise MilkPriceError(f"cannot reach {url}: {answer.error}; is the stack up (make up)?")
    return answer.status, answer.json()


def _table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------- commands


def cmd_up(settings: LocalSettings, args: argparse.Namespace) -> int:
    import dataclasses

    from milkprice.local import console, stack

    if args.log_format:  # the flag wins over MILKPRICE_LOG_FORMAT
        settings = dataclasses.replace(settings, log_format=args.log_format)
    stack.show_as(console.choose(settings.log_format, sys.stdout))
    return stack.up(settings, args.data, observe=args.observe)


def cmd_events(settings: LocalSettings, args: argparse.Namespace) -> int:
    """The scheduler and the upload events (a child of ``up``, a service in compose)."""
    from milkprice import logs
    from milkprice.local import processes, scheduler

    logs.setup("events")
    for attempt in range(30):  # the bucket may still be starting (compose starts all at once)
        try:
            store.ensure_bucket(settings)
            break
        except MilkPriceError:
            if attempt == 29:
                raise
            time.sleep(1.0)
    jobs = scheduler.start_scheduler(settings, settings.train_endpoint())
    uploads = _upload_events(settings)
    uploads.start()
    processes.wait_for_stop()
    uploads.stop()
    jobs.shutdown(wait=False)
    return 0


def _upload_events(settings: LocalSettings) -> watcher.Bridge | s3_queue.QueueRelay:
    """What plays the cloud's upload events: S3's own notifications through a queue, or a
    bridge that lists raw/ and sends the event the cloud's event service would."""
    from milkprice.bridge import watcher
    from milkprice.local import lambda_rie, s3_queue

    target = settings.event_endpoint()
    if settings.cloud == "aws" and settings.runtime == "lambda":
        # the train handler under the emulator at the event endpoint, invoked as an event
        # source mapping does, its batchItemFailures honoured
        invocations = target.rstrip("/") + lambda_rie.INVOCATIONS
        return s3_queue.QueueRelay(settings, invocations, invoke=True)
    if settings.cloud == "aws":
        return s3_queue.QueueRelay(settings, target)
    # each cloud's bridge remembers its own deliveries (tokens mean nothing across clouds)
    suffix = "" if settings.cloud == "gcp" else f"-{settings.cloud}"
    state = settings.state_path(f"bridge-state{suffix}.json")
    return watcher.Bridge(settings, target, state_file=state)


def cmd_upload(settings: LocalSettings, args: argparse.Namespace) -> int:
    for path in map(Path, args.paths):
        if not path.is_file():
            raise MilkPriceError(f"{path}: no such file")
        if path.name not in store.RAW_FILES:
            raise MilkPriceError(f"{path.name}: raw files are named {', '.join(store.RAW_FILES)}")
        token = store.write(settings, store.RAW_PREFIX + path.name, path.read_bytes(), "text/csv")
        print(f"uploaded {path} to {settings.bucket}/raw/{path.name} (version {token})")
    return 0


def cmd_train(settings: LocalSettings, args: argparse.Namespace) -> int:
    url = settings.train_endpoint()
    print(f"training through {url} ...", flush=True)
    start = time.monotonic()
    status, answer = _http(url, {"trigger": args.trigger}, _token(settings))
    if not isinstance(answer, dict) or "outcome" not in answer:
        raise MilkPriceError(f"train function answered {status}: {answer}")
    record = contract.convert(answer, contract.RunRecord, f"the answer of {url}")
    took = time.monotonic() - start
    print(f"run {record.run_id}: {record.outcome} in {took:.0f} s")
    print(f"  {record.reason}")
    return 0 if record.outcome in ("promoted", "not_promoted") else 1


def _model_row(role: str, e: contract.ModelEntry) -> list[Any]:
    return [
        role,
        e.candidate,
        _fmt(e.backtest.rmse),
        _fmt(e.backtest.mape),
        _fmt(e.naive.rmse),
        len(e.features),
    ]


def cmd_status(settings: LocalSettings, args: argparse.Namespace) -> int:
    found = contract.serving(settings)
    if found is None:
        print(f"{settings.bucket}: no model promoted yet")
    else:
        pointer, manifest = found
        print(f"serving version {pointer.version} (promoted {pointer.promoted})")
        print(_next_forecast(settings, pointer.version))
        print("\nthe models that price feature rows (/predict, V2 infer), one step ahead:")
        rows = [_model_row(role, e) for role, e in manifest.models.items()]
        print(_table(rows, ["model", "candidate", "rmse", "mape %", "naive rmse", "features"]))
    doc, _ = contract.read_ledger(settings)
    scored = f"{len(doc.forecasts)} served forecasts scored; " if doc.forecasts else ""
    print(f"\nlive accuracy: {scored}{live.summary(doc.drift)} (milkprice accuracy)")
    runs = contract.list_runs(settings, last=args.last)
    rows = [[r.run_id, r.trigger, r.outcome, r.seconds, r.reason[:70]] for r in runs]
    print(f"\nlast {len(rows)} runs")
    print(_table(rows, ["run", "trigger", "outcome", "seconds", "reason"]))
    return 0


def _next_forecast(settings: LocalSettings, version: str) -> str:
    """Next month's forecast as the predict function answers it: the same snapshot of the
    same version, so the same month, price and interval (and the figures its page shows)."""
    from milkprice.predict import landing, snapshot

    try:
        loaded = snapshot.load_version(settings, version)
    except MilkPriceError as exc:
        return f"next month's forecast: none, the version does not load: {exc.message}"
    f = loaded.forecast
    what = "the forecast path's first month" if f["source"] == "path" else "the forecast model's"
    line = f"next month's forecast, {f['month']}: {_fmt(f['price'])} {loaded.manifest.unit}"
    if band := f.get("interval"):
        line += f", {band['level']:.0%} interval {_fmt(band['lower'])} to {_fmt(band['upper'])}"
    line += f" ({what})"
    entry = contract.to_builtins(loaded.models["forecast"].entry)
    figures = landing.accuracy(f, contract.to_builtins(loaded.manifest), entry)
    if figures:
        line += (
            f"\n  backtest one month ahead: RMSE {_fmt(figures['rmse'])} on {figures['months']} "
            f"months, {_fmt(figures['to_naive'])} of the naive forecast's"
        )
        if figures["coverage"] is not None:
            line += f"; the interval held {figures['coverage']:.0%} of the time"
    return line


def cmd_models(settings: LocalSettings, args: argparse.Namespace) -> int:
    pointer = contract.read_pointer(settings)
    current = pointer[0].version if pointer else None
    rows = []
    for version in contract.versions(settings):
        m = contract.read_manifest(settings, version)
        f, leg = m.models["forecast"], m.models["legacy"]
        rows.append(
            [
                ("* " if m.version == current else "  ") + m.version,
                f.candidate,
                _fmt(f.backtest.rmse),
                leg.candidate,
                _fmt(leg.backtest.rmse),
                _fmt(f.naive.rmse),
            ]
        )
    print(_table(rows, ["version (* serving)", "forecast", "rmse", "legacy", "rmse", "naive"]))
    return 0


def cmd_rollback(settings: LocalSettings, args: argparse.Namespace) -> int:
    pointer = contract.rollback(settings, args.version)
    print(f"serving {pointer.version}: rolled back to {args.version}")
    return 0


def cmd_predict(settings: LocalSettings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MilkPriceError(f"{path}: {exc}") from None
    url = f"http://{settings.host}:{settings.predict_port}/predict"
    status, answer = _http(url, body, timeout=60)
    if status != 200:
        raise MilkPriceError(f"predict answered {status}: {json.dumps(answer)}")
    print(json.dumps(answer))
    return 0


def _get_forecast(settings: LocalSettings, months: int | None) -> tuple[int, Any]:
    base = f"http://{settings.host}:{settings.predict_port}/forecast"
    url = base if months is None else f"{base}?months={months}"
    answer = http.request(url, timeout=60)
    if answer.status == 0:
        raise MilkPriceError(f"cannot reach {url}: {answer.error}; is the stack up (make up)?")
    return answer.status, answer.json()


def cmd_forecast(settings: LocalSettings, args: argparse.Namespace) -> int:
    """The serving model's forecast path as a table: month, price and 80% interval. Without
    --months, the whole path (or next month's forecast, for a model that predates it)."""
    status, doc = _get_forecast(settings, args.months or settings.horizon)
    if status == 400 and args.months is None:  # the model was trained for a shorter path
        details = doc.get("details") or [{}]
        status, doc = _get_forecast(settings, details[0].get("maximum", 1))
    if status == 409 and args.months is None:
        print(f"milkprice forecast: {doc.get('error')}", file=sys.stderr)
        status, doc = _get_forecast(settings, None)
    if status != 200:
        raise MilkPriceError(f"forecast answered {status}: {doc.get('error', doc)}")
    rows = []
    for m in doc.get("months", [doc]):
        band = m.get("interval") or {}
        rows.append(
            [m["month"], _fmt(m["price"]), _fmt(band.get("lower")), _fmt(band.get("upper"))]
        )
    print(f"model version {doc['model_version']}: CLP per litre, with the 80% interval")
    print(_table(rows, ["month", "price", "lower", "upper"]))
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def accuracy_text(doc: contract.Ledger, forecasts: bool = False) -> str:
    """The ledger's figures per horizon, its drift state and, with ``forecasts``, every
    scored forecast: what `milkprice accuracy` and `milkprice replay` print."""
    rows = [
        [
            f.horizon,
            f.count,
            _fmt(f.forecast.rmse),
            _fmt(f.forecast.mae),
            f"{f.forecast.bias:+.2f}",
            _fmt(f.naive.rmse),
            _fmt(f.rmse_to_naive) if f.rmse_to_naive is not None else "-",
            _pct(f.coverage),
            (f"{f.coverage_band[0]:.0%}-{f.coverage_band[1]:.0%}" if f.coverage_band else "-"),
            _fmt(f.backtest_rmse) if f.backtest_rmse is not None else "-",
            _pct(f.backtest_coverage),
        ]
        for f in doc.horizons
    ]
    header = ["ahead", "scored", "rmse", "mae", "bias", "naive rmse", "/naive", "coverage"]
    header += ["90% band", "backtest rmse", "backtest cov"]
    lines = [
        "served forecasts against the prices that arrived, per months ahead "
        "(CLP per litre; 80% intervals)",
        _table(rows, header),
        "",
        live.summary(doc.drift),
    ]
    if doc.revisions:
        lines.append(f"{len(doc.revisions)} revised price(s): the scores keep the first")
    if forecasts:
        rows = [
            [
                f.month,
                f.horizon,
                f.version,
                _fmt(f.price),
                _fmt(f.lower) if f.lower is not None else "-",
                _fmt(f.upper) if f.upper is not None else "-",
                _fmt(f.actual),
                f"{f.error:+.2f}",
                {True: "yes", False: "no", None: "-"}[f.inside],
            ]
            for f in doc.forecasts
        ]
        head = ["month", "ahead", "version", "forecast", "lower", "upper", "actual", "error"]
        lines += ["", _table(rows, [*head, "inside"])]
    return "\n".join(lines)


def cmd_accuracy(settings: LocalSettings, args: argparse.Namespace) -> int:
    """The forecast ledger as a table: every served forecast scored, per months ahead."""
    doc, _ = contract.read_ledger(settings)
    if not doc.forecasts:
        print(f"{settings.bucket}: {live.summary(doc.drift)}")
        return 0
    print(accuracy_text(doc, args.forecasts))
    return 0


def cmd_replay(settings: LocalSettings, args: argparse.Namespace) -> int:
    """The system run month by month on a folder's data, on an emulator of its own."""
    from milkprice.local import replay

    return replay.main(settings, args)


def cmd_evaluate(settings: LocalSettings, args: argparse.Namespace) -> int:
    """The training core on local files, nothing written: every candidate's figures."""
    from datetime import date

    from milkprice.local import sample
    from milkprice.train import core

    raw = sample.read_folder(args.data) if args.data else sample.sample_files()
    source = args.data or "the sample data (python -m milkprice.local.sample)"
    print(f"evaluating on {source}", file=sys.stderr)
    timer = core.Timer(lambda stage: print(f"  {stage}", file=sys.stderr, flush=True))
    started = time.perf_counter()
    trained = core.train(raw, settings, timer, date.today())
    seconds = time.perf_counter() - started
    if args.json:
        report = {
            "seconds": seconds,
            "timings": timer.seconds,
            "backtest_months": trained.backtest.months,
            "long_months": trained.backtest.long_months,
            "models": {role: contract.to_builtins(m) for role, m in trained.served.items()},
            "candidates": [contract.to_builtins(c) for c in trained.candidates],
            "path": contract.to_builtins(trained.path) if trained.path else None,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(evaluation_text(trained, seconds, timer.seconds.get("backtest", 0.0)))
    if trained.path:
        print()
        # the anchors' side reads the path as the manifest's JSON has it
        print(_horizons(contract.to_builtins(trained.path), raw, args))
    return 0


def _horizons(path: dict[str, Any], raw: dict[str, bytes], args: argparse.Namespace) -> str:
    """The path's figures per horizon; with --anchors, statsforecast's beside them (and the
    JSON file, if any, gets them too)."""
    from datetime import date

    from milkprice.local import evaluation

    scores = None
    if args.anchors:
        print("  anchors (statsforecast, refit at every origin) ...", file=sys.stderr, flush=True)
        prices = evaluation.price_series(raw, date.today())
        root = Path(__file__).resolve().parents[2]
        scores = evaluation.measure(prices, path, args.arima, root)
        if args.json:
            doc = json.loads(Path(args.json).read_text())
            doc["anchors"] = scores
            Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return evaluation.horizon_text(path, scores)


def evaluation_text(trained: Trained, seconds: float, backtest_seconds: float) -> str:
    months, long = trained.backtest.months, trained.backtest.long_months
    naive = next(c for c in trained.candidates if c.name == "naive")
    assert naive.rmse is not None  # naive is always scored
    rows = []
    for c in trained.candidates:
        if c.rmse is None or c.mae is None or c.mape is None:
            rows.append([c.name, "", "", "", "", "", "", "", "", c.note or ""])
            continue
        lv = c.long
        rows.append(
            [
                c.name,
                ",".join(c.pools),
                f"{c.rmse:.3f}",
                f"{c.mae:.3f}",
                f"{c.mape:.2f}",
                f"{c.rmse / naive.rmse:.3f}",
                f"{lv.rmse:.3f}" if lv else "-",
                f"{lv.rmse_to_naive:.3f}" if lv else "-",
                f"{c.seconds or 0.0:.1f}",
                c.not_eligible or "",
            ]
        )
    header = ["candidate", "pools", "RMSE", "MAE", "MAPE %", "/naive"]
    header += [f"RMSE {len(long)} mo" if long else "long RMSE", "/naive", "seconds", "note"]
    lines = [
        f"one step ahead, refit at every origin; chosen on {months[0]}..{months[-1]} "
        f"({len(months)} months)"
        + (f"; long view {long[0]}..{long[-1]} ({len(long)} months)" if long else ""),
        "",
        _table(rows, header),
        "",
    ]
    for role, m in trained.served.items():
        line = (
            f"{role} model: {m.candidate}, RMSE {m.backtest.rmse:.3f} = "
            f"{m.backtest.rmse / m.naive.rmse:.3f} of the naive forecast's "
            f"{m.naive.rmse:.3f}"
        )
        if m.interval is not None:
            i = m.interval
            line += (
                f"; {i.level:.0%} interval held the actual price in "
                f"{i.coverage:.0%} of {i.scored_months} months"
            )
        lines.append(line)
    lines.append(f"training core: {seconds:.1f} s, of which the backtest {backtest_seconds:.1f} s")
    lines.append("promoted by a training run: " + ("yes" if trained.promote else "no") + ".")
    return "\n".join(lines)


COMMANDS = {
    "up": (cmd_up, "run the whole local stack (bucket, functions, scheduler, bridge)"),
    "upload": (cmd_upload, "upload raw CSV files to raw/ (training follows the upload)"),
    "train": (cmd_train, "start a training run through the train function and wait for it"),
    "status": (cmd_status, "serving version, its metrics, and the last runs"),
    "models": (cmd_models, "every model version with its metrics"),
    "rollback": (cmd_rollback, "serve an earlier version again"),
    "predict": (cmd_predict, "POST a JSON file to /predict"),
    "forecast": (cmd_forecast, "the forecast path of the next months, as a table"),
    "evaluate": (cmd_evaluate, "score every candidate on local CSVs (no bucket, nothing written)"),
    "accuracy": (cmd_accuracy, "live accuracy: served forecasts against the prices that arrived"),
    "replay": (
        cmd_replay,
        "train month by month on a folder's data; its ledger beside the backtest",
    ),
    "events": (cmd_events, "run the scheduler and the upload bridge (used by up)"),
}


def _up_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--data", help="folder whose three CSVs to upload to raw/ first")
    c.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="readable text or JSON lines (default: MILKPRICE_LOG_FORMAT, else auto: "
        "text on a terminal)",
    )
    c.add_argument(
        "--observe",
        action="store_true",
        help="also start Prometheus (scraping every function's /metrics) and Phoenix "
        "(the functions' traces, over OTLP/HTTP), and say where to look",
    )


def _train_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--trigger",
        choices=("http", "schedule"),
        default="http",
        help="what the run record names as its trigger (a scheduler's call: schedule)",
    )


def _evaluate_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--data", help="folder with the three CSVs (default: sample data)")
    c.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    c.add_argument(
        "--anchors",
        action="store_true",
        help="also score statsforecast's models on the path's origins (needs .venv-eval, "
        "which make evaluate creates)",
    )
    c.add_argument("--arima", action="store_true", help="with --anchors, AutoARIMA too (slow)")


def _replay_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--data", required=True, help="folder with the three CSVs")
    c.add_argument("--from", dest="first", default="2018-05", help="first month (YYYY-MM)")
    c.add_argument(
        "--quick",
        action="store_true",
        help="the tests' quick backtest (6 months, no long view) instead of the settings'",
    )
    c.add_argument("--json", metavar="FILE", help="also write the tables as JSON")


# each command's own arguments (a command not named here takes none)
ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], object]] = {
    "up": _up_arguments,
    "upload": lambda c: c.add_argument("paths", nargs="+", metavar="PATH"),
    "train": _train_arguments,
    "rollback": lambda c: c.add_argument("version"),
    "predict": lambda c: c.add_argument("file", metavar="FILE.json"),
    "evaluate": _evaluate_arguments,
    "forecast": lambda c: c.add_argument(
        "--months", type=int, help="how many months of the path (default: all of it)"
    ),
    "accuracy": lambda c: c.add_argument(
        "--forecasts", action="store_true", help="also list every scored forecast"
    ),
    "replay": _replay_arguments,
    "status": lambda c: c.add_argument("--last", type=int, default=5, help="how many runs to list"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="milkprice", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, (_, text) in COMMANDS.items():
        c = sub.add_parser(name, help=text, description=text)
        if name in ARGUMENTS:
            ARGUMENTS[name](c)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = LocalSettings.from_env()
        if args.command not in ("up", "evaluate", "replay"):
            from milkprice.local import object_stores

            object_stores.use_local(settings)  # the local stack's, unless the environment says else
        handler = COMMANDS[args.command][0]
        status = handler(settings, args)
        sys.stdout.flush()  # here, where a reader gone away is caught below, not at exit
        return status
    except MilkPriceError as exc:
        print(f"milkprice {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
