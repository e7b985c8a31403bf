"""Fault injection for the tests, as a plugin that registers nothing (so no trial id changes): loaded with
`--plugin tests/faults.py` (or ``plugins.load``), it reaches every process that trains the way any plugin does
(Ray ships it to Tune's and Ray Train's workers) and wraps ``Trainer.run``. Which fault is read from
HARNESS_TEST_FAULT in the training process: 'kill@E' or 'raise@E' acts after epoch E's checkpoint is written and
reported ('E+': at every epoch from E on, so retries fail too); an optional '@substring' limits it to the trials
whose folder path (results/<suite>/<trial_id>) contains it; several faults are separated by commas. Without the
variable the plugin does nothing."""

import os
import signal

from harness.trial.trainer import Trainer

_plain_run = Trainer.run


def fault(epoch: int, trial_dir: str) -> None:
    for spec in filter(None, os.environ.get("HARNESS_TEST_FAULT", "").split(",")):
        action, at_epoch, *match = spec.split("@")
        hit = epoch >= int(at_epoch[:-1]) if at_epoch.endswith("+") else epoch == int(at_epoch)
        if not hit or (match and match[0] not in trial_dir):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected test fault after epoch {epoch}")


def run(self, on_epoch=None, restart=False, on_step=None):
    def epoch_done(row):
        if on_epoch is not None:
            on_epoch(row)  # the checkpoint is pushed and the epoch reported before the fault
        fault(row["epoch"], str(self.cfg.trial_dir))

    return _plain_run(self, on_epoch=epoch_done, restart=restart, on_step=on_step)


Trainer.run = run
