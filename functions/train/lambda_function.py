"""AWS Lambda entry point of the train function (``lambda_function.handler``): HTTP events
go to the same app as the image's ``train_service`` in ``main.py`` beside this file; SQS
batches, S3, EventBridge and scheduler events are read as ``train_events`` reads them
(``milkprice.train.lambda_events``)."""

from __future__ import annotations

from pathlib import Path

from milkprice.train import lambda_events

handler = lambda_events.handler(Path(__file__).with_name("main.py"))
