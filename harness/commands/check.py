"""`harness check-plugin FILE`: the contract checks of what a plugin registers (harness.trial.plugin_check), before a
sweep: each check on one line, the fix beside a failure; exit 1 when one fails."""

from __future__ import annotations

import logging

from harness.core.exit_codes import ExitCode


def cmd_check_plugin(args) -> int:
    from harness.core import plugins
    from harness.core.config import ConfigError
    from harness.core.yaml_files import parse_overrides
    from harness.trial.plugin_check import check_entries, registered_by

    plugin = plugins.load(args.file)
    entries = registered_by(plugin.spec)
    if not entries:
        raise ConfigError(f"plugin {plugin.spec}: registers no method, model, dataset or metric")
    print(f"checking {', '.join(f'{k} {n}' for k, n in entries)} from {plugin.spec} (tiny synthetic data, CPU)")
    logging.getLogger("harness").setLevel(logging.WARNING)  # the checks' own lines, not the tiny trials' epochs
    results = check_entries(entries, parse_overrides(args.set))
    for result in results:
        print(result.line(), flush=True)
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} checks passed")
    return ExitCode.FAILED if failed else ExitCode.DONE
