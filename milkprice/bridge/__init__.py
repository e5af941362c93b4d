"""The upload bridge: where the bucket has no event source of its own that reaches the train
function, it watches ``raw/`` and delivers every new version as its cloud's upload event.

Deployed on its own (Knative's ContainerSource runs ``python -m milkprice.bridge`` from the
train image), and run by ``milkprice up`` for the clouds whose store sends no event locally.
``shapes`` builds each cloud's event; ``watcher`` lists, delivers and redelivers.
"""
