"""harness.cli: what a command raises becomes its documented exit code and one line on stderr, never a traceback
(the codes: docs/guarantees.md, harness.core.exit_codes)."""

import re
import shlex
from pathlib import Path

import pytest
import torch

from harness.cli import build_parser
from harness.commands import suite as suite_commands
from harness.core.config import ConfigError
from harness.core.exit_codes import ExitCode, Interrupted
from harness.core.plugins import PluginError
from harness.data import DataError
from harness.store.errors import CorruptFile, ResourceError
from helpers import cli

RAISED = [
    (ConfigError("suite.yaml: grid.width: Input should be a valid integer"), ExitCode.REFUSED,
     "error: suite.yaml: grid.width: Input should be a valid integer"),
    (DataError("cifar100 not found"), ExitCode.REFUSED, "error: cifar100 not found"),
    (CorruptFile("/r/t/logits.npz", "truncated"), ExitCode.REFUSED, "error: /r/t/logits.npz: truncated"),
    (PluginError("plugin x.py: failed to import"), ExitCode.REFUSED, "error: plugin x.py: failed to import"),
    (ResourceError("no space left on device for /r"), ExitCode.OUT_OF_RESOURCES,
     "error: no space left on device for /r"),
    (FloatingPointError("train_loss is nan at epoch 3"), ExitCode.FAILED, "error: train_loss is nan at epoch 3"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), ExitCode.OUT_OF_RESOURCES,
     "error: out of memory (asked for 2.00 GiB more): lower batch_size, the width or eval_batch_size, or run where "
     "there is more memory"),
    (OSError(28, "No space left on device"), ExitCode.OUT_OF_RESOURCES,
     "error: no space left on device (OSError: [Errno 28] No space left on device); free some space and run the same "
     "command again: it goes on from what was saved"),
    (PermissionError(13, "Permission denied", "/shared/results"), ExitCode.REFUSED,
     "error: /shared/results: Permission denied"),
    (Interrupted("interrupted: 3 trial(s) kept"), ExitCode.INTERRUPTED, "interrupted: 3 trial(s) kept"),
    (KeyboardInterrupt(), ExitCode.INTERRUPTED, "interrupted"),
]  # fmt: skip


@pytest.mark.parametrize("raised, code, line", RAISED, ids=[type(r[0]).__name__ for r in RAISED])
def test_what_a_command_raises_is_its_exit_code_and_one_line(monkeypatch, tmp_path, raised, code, line):
    def status(args):
        raise raised

    monkeypatch.setattr(suite_commands, "cmd_status", status)
    proc = cli("status", tmp_path / "suite.yaml")
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (code, [line])


def test_an_unexpected_error_is_not_swallowed(monkeypatch, tmp_path):
    def status(args):
        raise KeyError("a bug")

    monkeypatch.setattr(suite_commands, "cmd_status", status)
    with pytest.raises(KeyError, match="a bug"):
        cli("status", tmp_path / "suite.yaml")


def test_a_commands_own_exit_code_is_returned(monkeypatch, tmp_path):
    monkeypatch.setattr(suite_commands, "cmd_status", lambda args: ExitCode.FAILED)
    assert cli("status", tmp_path / "suite.yaml").returncode == ExitCode.FAILED == 1


def test_the_benchmark_scripts_harness_commands_parse():
    """The GPU scripts under benchmarks/ run rarely (on a lent device): their `harness` command lines are checked
    against the parser here, so a renamed flag or a narrowed choice is caught before the device time is spent."""
    root = Path(__file__).parents[2]
    parser, checked = build_parser(), 0
    for script in sorted((root / "benchmarks").rglob("*.sh")):
        text = script.read_text().replace("\\\n", " ")
        defaults = dict(re.findall(r"^\s*(\w+)=\$\{\w+:-([^}]*)\}", text, re.M))  # NAME=${NAME:-value}
        defaults.update(re.findall(r"^\s*(\w+)=([\w.]+)\s*$", text, re.M))  # NAME=value
        for line in re.findall(r"-m harness (.*)", text):
            line = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), "1"), line)  # as the shell would
            line = re.split(r" (?:2?>|\||;;|&&|#)", line)[0]  # up to a redirection, pipe, case end or comment
            argv = [a for a in shlex.split(line) if a != "$@"]
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{script.relative_to(root)}: `harness {shlex.join(argv)}` is refused by the CLI")
            checked += 1
    assert checked >= 5
