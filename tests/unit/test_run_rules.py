"""The rules a run follows, on their own: which errors a retry can help, which inputs are
newer, what a claim written by an earlier release says."""

from __future__ import annotations

import pytest

from milkprice import contract
from milkprice.contract import InputObject
from milkprice.errors import (
    Contended,
    DataError,
    ExportError,
    NotReady,
    RequestTimeout,
    StorageUnavailable,
    retryable,
)

MILK, RAIN = "raw/precio_leche.csv", "raw/precipitaciones.csv"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (StorageUnavailable("reading x: storage unavailable"), True),
        (NotReady("no model yet"), True),
        (RequestTimeout("body too slow"), True),
        (Contended("lost the race five times"), True),
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("timed out"), True),
        (DataError("precio_leche.csv", "empty"), False),
        (ExportError("the exported model disagrees"), False),
        (ZeroDivisionError("division by zero"), False),
        (KeyError("forecast"), False),
        (AttributeError("'NoneType' object has no attribute 'data'"), False),
    ],
)
def test_only_errors_known_to_be_transient_are_retryable(
    error: BaseException, expected: bool
) -> None:
    """A bug fails the same way every time it is retried: its event is not redelivered."""
    assert retryable(error) is expected


def entry(token: str, uploaded: str = "") -> InputObject:
    return InputObject(sha256="0" * 64, token=token, uploaded=uploaded)


def test_a_newer_upload_of_any_file_is_newer() -> None:
    serving = {
        MILK: entry("7", "2026-11-27T03:00:05Z"),
        RAIN: entry("3", "2026-11-27T03:00:00Z"),
    }
    mine = {MILK: entry("6", "2026-11-27T03:00:04.900Z"), RAIN: entry("4", "2026-11-27T03:00:09Z")}
    found = contract.newer_input(serving, mine)
    assert found.startswith(MILK) and "2026-11-27T03:00:05Z" in found
    assert contract.newer_input(mine, serving).startswith(RAIN)  # each is newer in one file


def test_the_same_version_or_a_later_one_is_not_newer() -> None:
    serving = {MILK: entry("7", "2026-11-27T03:00:05Z"), RAIN: entry("3", "2026-11-27T03:00:00Z")}
    same = dict(serving)
    later = {MILK: entry("8", "2026-11-27T03:00:06Z"), RAIN: entry("3", "2026-11-27T03:00:00Z")}
    # a store whose times are to the second: two uploads within it are of equal age
    tie = {MILK: entry("9", "2026-11-27T03:00:05Z"), RAIN: entry("3", "2026-11-27T03:00:00Z")}
    for mine in (same, later, tie):
        assert contract.newer_input(serving, mine) == ""
    assert contract.same_inputs(serving, same) and not contract.same_inputs(serving, later)
    # a time with a fraction and one without compare as instants, not as text
    assert contract.newer_input({MILK: entry("1", "2026-11-27T03:00:05.5Z")}, tie) != ""


def test_a_model_that_recorded_no_upload_times_is_never_newer() -> None:
    """The first release recorded tokens only: its models are replaced as they always were."""
    old = contract.decode(
        b'{"sha256": "' + b"0" * 64 + b'", "generation": 1796455902132809}',
        InputObject,
        "manifest.json",
    )
    assert old.token == "1796455902132809" and old.uploaded == ""
    serving = {MILK: old}
    mine = {MILK: entry("1", "2020-01-01T00:00:00Z")}
    assert contract.newer_input(serving, mine) == ""
    assert not contract.dated(serving) and contract.dated(mine)


def test_a_claim_of_an_earlier_release_decodes_without_a_heartbeat() -> None:
    doc = b'{"run_id": "r1", "started": "2026-11-27T03:00:00Z", "inputs": {"raw/x": 5}}'
    claim = contract.decode(doc, contract.Claim, "runs/inputs/k.json")
    assert (claim.run_id, claim.heartbeat, claim.beats) == ("r1", "", 0)
    beat = contract.Claim("r1", claim.started, {"raw/x": "5"}, heartbeat="t", beats=2)
    assert contract.encode(beat) != contract.encode(contract.Claim("r1", claim.started, {}))
