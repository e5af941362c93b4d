"""The train image's one target (``train_service``), as each platform reaches it: health
probes on GET, the AWS Lambda Web Adapter's pass-through POSTs of non-HTTP events to
``/events``, Event Grid and Knative deliveries to ``/events``, and the HTTP trigger elsewhere.

Against the real bucket emulator; the training itself is left out (``no_training``), the
run's read, claim, archive and record are real.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import functions_framework
import pytest

from milkprice import store
from milkprice.settings import Settings
from tests.support.platform_events import (
    CLOUDEVENT,
    PING_ATTRIBUTES,
    PRICE,
    SCHEDULE,
    SOURCE,
    binary,
    blob_cloudevent,
    eventbridge,
    post,
    runs,
    s3_notification,
    s3_record,
    upload,
)

pytestmark = pytest.mark.usefixtures("no_training")


def client() -> Any:
    return functions_framework.create_app("train_service", SOURCE, "http").test_client()


def etag(token: str) -> str:
    return hashlib.md5(token.encode()).hexdigest()


def test_health_answers_on_any_get_and_trains_nothing(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(settings, sample_raw)
    c = client()
    # the probes each platform may send: the adapter's readiness check on /, Knative's and
    # Container Apps' on a path of their own
    for path in ("/", "/healthz", "/v2/health/ready", "/events"):
        answer = c.get(path)
        assert answer.status_code == 200, (path, answer.get_json())
        assert answer.get_json() == {
            "live": True,
            "function": "train",
            "cloud": "gcp",
            "bucket": settings.bucket,
        }
    assert c.head("/").status_code == 200
    assert runs(settings) == []
    assert store.list_names(settings, store.CLAIMS_PREFIX) == []
    # a bad setting fails the probe, naming the variable: the revision never takes traffic
    monkeypatch.setenv("MILKPRICE_CLOUD", "mars")
    answer = c.get("/")
    assert answer.status_code == 500 and "MILKPRICE_CLOUD" in answer.get_json()["error"]


def test_the_adapters_pass_through_posts_start_runs(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    """What Lambda hands the adapter, the adapter POSTs to /events as it came."""
    tokens = upload(settings, sample_raw)
    c = client()
    notification = s3_notification(
        s3_record(settings.bucket, PRICE, etag(tokens["precio_leche.csv"]))
    )
    first = post(c, notification, path="/events")
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["trigger"] == "upload"
    assert first.get_json()["event"]["source"] == "s3"
    # the same upload again, as EventBridge's Object Created: a redelivery, skipped
    again = post(
        c, eventbridge(settings.bucket, PRICE, etag(tokens["precio_leche.csv"])), path="/events"
    )
    assert again.get_json()["outcome"] == "skipped"
    assert again.get_json()["earlier"]["run_id"] == first.get_json()["run_id"]
    # a new version, as EventBridge's Object Created: a run of its own
    new = store.write(settings, PRICE, sample_raw["precio_leche.csv"] + b"\n", "text/csv")
    second = post(c, eventbridge(settings.bucket, PRICE, etag(new)), path="/events")
    assert second.get_json()["event"]["source"] == "eventbridge"
    assert second.get_json()["outcome"] == "not_promoted"
    # EventBridge Scheduler's fixed payload, and a trailing slash the adapter may keep
    scheduled = post(c, SCHEDULE, path="/events/")
    assert scheduled.status_code == 200 and scheduled.get_json()["trigger"] == "schedule"
    assert scheduled.get_json()["event"] == {"source": "scheduler"}
    written = runs(settings)
    assert sorted(r["trigger"] for r in written) == ["schedule", "upload", "upload"]
    # an unknown shape: a 400 naming the shapes taken, and nothing started
    unknown = post(
        c, {"detail-type": "EC2 Instance State-change", "source": "aws.ec2"}, path="/events"
    )
    assert unknown.status_code == 400 and "S3 event notification" in unknown.get_json()["error"]
    assert len(runs(settings)) == 3


def test_elsewhere_a_post_is_the_http_trigger(
    settings: Settings, sample_raw: dict[str, bytes]
) -> None:
    upload(settings, sample_raw)
    c = client()
    manual = post(c, {})
    assert manual.status_code == 200 and manual.get_json()["trigger"] == "http"
    scheduled = post(c, SCHEDULE, path="/")  # Cloud Scheduler and a Container Apps job
    assert scheduled.get_json()["trigger"] == "schedule"
    refused = post(c, {"trigger": "upload"}, path="/train")
    assert refused.status_code == 400 and "trigger" in refused.get_json()["error"]
    assert c.put("/").status_code == 405
    assert sorted(r["trigger"] for r in runs(settings)) == ["http", "schedule"]


def test_with_a_token_events_need_it_and_the_handshake_does_not(
    settings: Settings, sample_raw: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the endpoint is public (Container Apps), Event Grid delivers with the token in a
    secret delivery attribute; its handshake comes without one and starts nothing."""
    monkeypatch.setenv("MILKPRICE_TRAIN_TOKEN", "s3cret")
    tokens = upload(settings, sample_raw)
    c = client()
    event = blob_cloudevent(settings.bucket, PRICE, tokens["precio_leche.csv"])
    headers = {"Content-Type": CLOUDEVENT}
    assert c.post("/events", data=json.dumps(event), headers=headers).status_code == 401
    assert post(c, SCHEDULE, path="/events").status_code == 401
    assert post(c, SCHEDULE, path="/").status_code == 401
    assert runs(settings) == []
    origin = "eventgrid.azure.net"
    handshake = c.options("/events", headers={"WebHook-Request-Origin": origin})
    assert handshake.status_code == 200
    assert handshake.headers["WebHook-Allowed-Origin"] == origin
    assert runs(settings) == []
    headers["Authorization"] = "Bearer s3cret"
    delivered = c.post("/events", data=json.dumps(event), headers=headers)
    assert delivered.status_code == 200, delivered.get_json()
    assert delivered.get_json()["event"]["source"] == "eventgrid"
    # a Knative PingSource, binary mode, with the token
    ping = {
        **binary({**PING_ATTRIBUTES, "id": str(uuid.uuid4())}),
        "Authorization": "Bearer s3cret",
    }
    pinged = c.post("/events", data=json.dumps(SCHEDULE), headers=ping)
    assert pinged.get_json()["event"]["source"] == "knative-ping"
    assert sorted(r["trigger"] for r in runs(settings)) == ["schedule", "upload"]
