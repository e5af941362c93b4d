"""Train function: its targets, each one call to ``milkprice.train.targets``.

``train_http`` is the HTTP trigger (manual calls and the scheduler); ``train_events`` takes
every platform's event shape on any path, ``/events`` included; ``train_event`` is the Eventarc
storage trigger (a CloudEvent function); ``train_service`` is the container image's one target.
Importing this module sets nothing up: each target does, on its first request.
"""

from __future__ import annotations

import cloudevents.exceptions
import flask
import functions_framework
from cloudevents.http import CloudEvent

from milkprice.train import targets


@functions_framework.http
def train_http(request: flask.Request) -> flask.Response:
    return targets.http_trigger(request)


@functions_framework.http
def train_events(request: flask.Request) -> flask.Response:
    return targets.events(request)


@functions_framework.cloud_event
def train_event(event: CloudEvent) -> None:
    targets.storage_event(event)


@functions_framework.errorhandler(RecursionError)
@functions_framework.errorhandler(cloudevents.exceptions.GenericException)
def _unreadable(exc: Exception) -> flask.Response:
    return targets.unreadable(exc)


@functions_framework.errorhandler(405)
def _not_allowed(exc: Exception) -> flask.Response:
    return targets.not_allowed(exc)


@functions_framework.http
def train_service(request: flask.Request) -> flask.Response:
    return targets.service(request)
