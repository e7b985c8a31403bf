"""Snapshot Ensembles (Huang et al., ICLR 2017) as a plugin, written only against the public method API: its own
learning-rate schedule (``schedule``), a hook after every step (``after_step``) and members that are weight states
(``weight_members``, filled with ``loop.model.keep``). The harness ships the same method as `method: snapshot`.

Use it: `plugins: [cyclic_snapshots.py]` in a suite, then `method: cyclic_snapshots` with M the number of cycles.
"""

import math

from harness.methods import Loop, Method, register_method


@register_method("cyclic_snapshots")
class CyclicSnapshots(Method):
    """Snapshot Ensembles as a plugin: M cosine cycles from the recipe's lr, a member at the end of each."""

    single_network = False  # M >= 2: M counts snapshots, not inputs
    default_M = 5
    label, order = "Snapshots (plugin)", 60.5

    @classmethod
    def weight_members(cls, cfg):
        return cfg.num_inputs  # the network is built once per member, inside a WeightMembers

    @classmethod
    def train_row(cls, cfg):
        return 1, 1  # one network trained on one image per row: the members cost nothing while training

    def __init__(self, cfg, num_classes, mix_size, partners=None):
        super().__init__(cfg, num_classes, mix_size, partners)
        self.snapshots, self.M = cfg.num_inputs, 1  # each batch trains the one live network

    def cycle(self, steps_per_epoch: int) -> int:
        return math.ceil(self.cfg.epochs * steps_per_epoch / self.snapshots)

    def schedule(self, lr, epoch, step, steps_per_epoch):
        t, cycle = epoch * steps_per_epoch + step, self.cycle(steps_per_epoch)
        return self.cfg.learning_rate / 2 * (math.cos(math.pi * (t % cycle) / cycle) + 1)

    def after_step(self, loop: Loop):
        ended, rest = divmod(loop.global_step, self.cycle(loop.steps_per_epoch))
        if rest == 0 and ended < self.snapshots:
            loop.model.keep(ended - 1)  # the last snapshot is the live network when training ends
