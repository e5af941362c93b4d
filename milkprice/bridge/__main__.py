"""The upload bridge alone, as a long-running container: ``python -m milkprice.bridge``.

Where the bucket has no event source of its own that reaches the train function (a
self-hosted S3-compatible store on Kubernetes, say), this watches ``raw/`` in whichever store
``MILKPRICE_CLOUD`` names and POSTs every new version as a CloudEvent (the bridge of
:mod:`milkprice.bridge.watcher`) to the sink: ``K_SINK``, as a Knative ContainerSource sets it,
else ``MILKPRICE_EVENT_URL``, with the train token when ``MILKPRICE_TRAIN_TOKEN`` is set.
Schedules come from elsewhere (a Kubernetes CronJob). Its state file only saves redeliveries:
the train function skips an upload it has trained on.
"""

from __future__ import annotations

import os
import signal
import sys

from milkprice import logs
from milkprice.bridge import watcher
from milkprice.errors import MilkPriceError
from milkprice.settings import LocalSettings

STOPS = {signal.SIGINT, signal.SIGTERM}


def main() -> int:
    logs.setup("bridge")
    try:
        settings = LocalSettings.from_env()
    except MilkPriceError as exc:
        print(f"bridge: {exc.message}", file=sys.stderr)
        return 1
    state = settings.state_path("bridge-state.json")
    bridge = watcher.Bridge(settings, watcher.sink(settings, os.environ), state_file=state)
    # blocked before the watcher's threads start, which inherit the mask: the stop signals
    # wait for this thread's sigwait, whichever thread the kernel picks
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    bridge.start()
    signal.sigwait(STOPS)
    bridge.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
