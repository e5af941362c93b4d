"""Unit tests: no bucket emulator, no server process."""
