"""The floor under everything: the trial's typed configuration, the result files' names, the registries and plugins,
the environment variables, logging, bounded reads and the torch-level distribution helpers. Imports nothing else of
the harness."""
