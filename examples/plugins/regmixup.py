"""RegMixup (Pinto et al., "Using Mixup as a Regularizer Can Surprisingly Improve Accuracy and Out-of-Distribution
Robustness", NeurIPS 2022), as a harness plugin: one file, written only against the harness's public API.

One network (M = 1) trained on every clean image *and* a Mixup of the batch:

    loss = CE(f(x), y) + eta * CE(f(x~), y~),   x~ = lam x + (1 - lam) x[perm],   y~ = lam y + (1 - lam) y[perm]

with one lam ~ Beta(alpha, alpha) per batch and a random permutation of the batch as partners (the authors'
regmixup_data). Unlike Mixup, the clean term keeps the network on the data distribution, so a large alpha (lam
near 0.5, strongly mixed images) can be used as a regulariser: the paper uses alpha 10 on CIFAR and eta 1. As in
the authors' training loop, the clean and the mixed batch go through the network as one batch of 2n images and
the loss is the cross-entropy's mean over those 2n rows: (CE(clean) + eta CE(mixed)) / 2, the paper's sum at
half the learning rate. A training step costs two forward/backward passes per image.

Use it: `plugins: [regmixup.py]` in a suite (a path relative to the suite file), or `--plugin regmixup.py`.
"""

import torch
import torch.nn.functional as F

from harness.methods import Method, MixedBatch, Option, register_method


@register_method("regmixup")
class RegMixup(Method):
    """RegMixup (Pinto et al. 2022): cross-entropy on the clean batch plus eta x a Mixup term with a large alpha."""

    options = {
        "regmixup_alpha": Option(10.0, "Beta(alpha, alpha) of the Mixup ratio (the paper's 10 on CIFAR)", gt=0),
        "regmixup_eta": Option(1.0, "weight eta of the Mixup term (paper: 1)", ge=0),
    }
    # the report: its own label, place (after CutMix, before the multi-input methods), colour and marker
    label, order, color, marker = "RegMixup", 2.5, "#e6550d", "d"

    @classmethod
    def train_row(cls, cfg):
        return 1, 0.5  # two training rows (clean, mixed) per loader image: twice the step's FLOPs per image

    def prepare(self, x, y, progress):
        """Rows interleaved clean / mixed, so that every micro-batch and worker shard holds both; the loss is the
        harness's soft-target cross-entropy averaged over the 2n rows, the mixed rows' targets carrying eta."""
        n = len(y)
        alpha = float(self.option(self.cfg, "regmixup_alpha"))
        eta = self.option(self.cfg, "regmixup_eta")
        lam = torch.distributions.Beta(alpha, alpha).sample().to(x.device)  # torch's seeded RNG
        partner = torch.randperm(n, device=x.device)
        mixed = lam * x + (1 - lam) * x[partner]
        one_hot = F.one_hot(y, self.num_classes).float()
        soft = lam * one_hot + (1 - lam) * one_hot[partner]
        inputs = torch.stack([x, mixed], 1).flatten(0, 1).unsqueeze(1)  # (2n, 1, C, H, W)
        targets = torch.stack([one_hot, eta * soft], 1).flatten(0, 1).unsqueeze(1)  # (2n, 1, K)
        dominant = torch.where(lam >= 0.5, y, y[partner])  # train accuracy of a mixed row: its larger share
        labels = torch.stack([y, dominant], 1).flatten(0, 1).unsqueeze(1)
        return MixedBatch(inputs, None, targets, labels)
