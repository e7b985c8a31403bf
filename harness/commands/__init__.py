"""The handlers of the `harness` commands (harness.cli parses and dispatches): one module per group of commands,
each handler ``args -> ExitCode``."""
