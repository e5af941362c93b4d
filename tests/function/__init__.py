"""Function tests: a function in-process, or the store, against a real bucket emulator."""
