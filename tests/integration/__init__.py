"""Integration tests: real processes end to end (servers, the stack, installed packages)."""
