"""Local tooling: the ``milkprice`` command, the bucket emulator, stand-ins for the cloud's
scheduler and storage events, the sample data, and ``milkprice up``. Nothing deployed as a
function imports this package."""
