"""MC-Dropout: one network trained with dropout, M stochastic passes at test time."""

import torch.nn.functional as F

from harness.methods import Option, register_method
from harness.methods.base import Method, MixedBatch


@register_method("mc_dropout")
class MCDropout(Method):
    """MC-Dropout (Gal & Ghahramani 2016): one network trained with dropout; at test time M = T stochastic
    passes (seeded) are its members (docs/recipe.md §8)."""

    order, color, marker = 9, "#e377c2", "<"  # the report: tables' order, plots' colour and marker

    default_M = 30  # uncertainty-baselines' num_dropout_samples for its "size=30" row
    single_network = False
    network = "mc_dropout"
    # uncertainty-baselines' dropout.py dropout_rate
    options = {"dropout": Option(0.1, "the dropout rate after each block's first convolution", gt=0, lt=1)}

    @classmethod
    def network_options(cls, cfg):
        return {"p": cls.option(cfg, "dropout"), "seed": cfg.seed}

    @classmethod
    def train_row(cls, cfg):
        return (1, 1)

    def prepare(self, x, y, progress):
        """One network, one pass: a single head in training."""
        return MixedBatch(x.unsqueeze(1), None, F.one_hot(y, self.num_classes).float().unsqueeze(1), y.unsqueeze(1))
