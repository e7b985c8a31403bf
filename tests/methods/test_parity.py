"""Parity with the authors' code (docs/recipe.md): CutMix/Mixup inside MixMo, initialisation,
PreActResNet, the schedule's edges, TACE and the misclassification AUROC."""

import math

import numpy as np
import pytest
import torch

from harness.core.schedule import learning_rate, training_progress
from harness.data import ImageArrays
from harness.data.loader import Sampling, TrainLoader
from harness.methods import METHODS
from harness.methods.mixing import patch_probability
from harness.metrics import auroc, misclassification_auroc, tace
from harness.models import MODELS, count_parameters
from helpers import RAW, tiny_config


def own_shares(method_name: str, msda: str, batches: int = 30, n: int = 64, partners=None):
    """The share of each mixed input's soft target that is its own label (partner images from ``partners``)."""
    torch.manual_seed(0)
    cfg = tiny_config(method=method_name, M=2, b=1, msda=msda, msda_prob=1.0, synthetic_classes=10)
    method = METHODS.get(method_name)(cfg, 10, 16, partners)
    shares, mixed = [], 0
    for _ in range(batches):
        x, y = torch.randn(n, 3, 16, 16), torch.arange(n) % 10
        batch = method.prepare(x, y, progress=0.0)
        targets = batch.targets / batch.targets.sum(-1, keepdim=True)  # the loss weights divided out
        own = targets.gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)
        # entries whose partner has another label: the own share is exactly what the label says
        partner_differs = own < 1 - 1e-6
        shares.append(own[partner_differs])
        mixed += int(partner_differs.sum())
    return torch.cat(shares), mixed


@pytest.mark.parametrize(
    "method_name, msda", [("cut_mixmo", "cutmix"), ("linear_mixmo", "cutmix"), ("linear_mixmo", "mixup")]
)
def test_inside_mixmo_the_own_label_keeps_the_larger_share(method_name, msda):
    shares, mixed = own_shares(method_name, msda)
    assert mixed > 1000
    # the authors: P(partner share > 0.5 | mixed) = 0.0004; the harness before this change: 0.17 - 0.20
    assert (shares < 0.5 - 1e-6).float().mean() < 0.001, shares.min()


def test_single_network_cutmix_keeps_its_symmetric_ratio():
    """The authors swap roles only inside MixMo; plain CutMix keeps Beta(1, 1) box shares on both sides."""
    torch.manual_seed(0)
    cfg = tiny_config(method="cutmix", msda_prob=1.0, synthetic_classes=10)
    method = METHODS.get("cutmix")(cfg, 10, 16)
    x, y = torch.randn(4096, 3, 16, 16), torch.arange(4096) % 10
    batch = method.prepare(x, y, progress=0.0)
    own = batch.targets.gather(-1, batch.labels.unsqueeze(-1)).squeeze()
    differs = own < 1
    # without the swap the partner dominates whenever its (border-clipped) box covers over half: 12.7% here
    assert 0.10 < (own[differs] < 0.5).float().mean() < 0.16


def test_partners_come_from_the_dataset():
    torch.manual_seed(0)
    pool = ImageArrays(np.full((500, 16, 16, 3), 200, np.uint8), np.full(500, 7))  # every pool image: label 7
    loader = TrainLoader(pool, Sampling(64, crop_padding=0, flip=False), device=torch.device("cpu"), **RAW)
    calls = []

    def partners(k):
        calls.append(k)
        return loader.sample(k)

    cfg = tiny_config(method="cut_mixmo", M=2, msda="cutmix", msda_prob=1.0, synthetic_classes=10)
    method = METHODS.get("cut_mixmo")(cfg, 10, 16, partners)
    y = torch.arange(64) % 7  # labels 0..6: any share of class 7 came from a dataset partner
    batch = method.prepare(torch.zeros(64, 3, 16, 16), y, progress=0.0)
    assert calls == [64 * 2]  # one partner per input of each member
    targets = batch.targets / batch.targets.sum(-1, keepdim=True)
    assert (targets[..., 7] > 0).float().mean() > 0.5  # CutMix applied to every input; boxes may be empty
    assert (targets[..., 7] <= 0.5 + 1e-6).all()  # and never the larger share (the swap)


def test_the_trainer_draws_partners_from_its_training_set():
    from harness.trial.trainer import Trainer

    trainer = Trainer(tiny_config(method="cut_mixmo", M=2, msda="cutmix", epochs=1))
    assert trainer.method.partners == trainer.train_loader.sample
    trainer = Trainer(tiny_config(method="cut_mixmo", M=2, msda="cutmix", msda_partner="batch"))
    assert trainer.method.partners is None


@pytest.mark.slow  # trains or builds reports: the full lane
def test_init_std_is_he_within_two_percent():
    torch.manual_seed(0)
    ratios = []
    for _ in range(5):
        model = MODELS.get("wrn").build(16, 4, 100, 2)
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.weight.numel() > 5000:
                ratios.append(m.weight.std().item() / math.sqrt(2 / m.weight[0].numel()))
    assert abs(np.mean(ratios) - 1) < 0.02 and len(ratios) > 40


def test_preact_resnet_heads_are_drawn_from_n_0_001():
    torch.manual_seed(0)
    model = MODELS.get("preact_resnet").build(18, 1, 200, 2)
    w = model.heads.weight
    assert abs(w.std().item() / 0.01 - 1) < 0.02 and abs(w.mean().item()) < 0.001 and (model.heads.bias == 0).all()


@pytest.mark.parametrize(
    "width, M, params",
    [
        (1, 1, 11_268_616),
        (1, 2, 11_372_944),
        (2, 1, 44_784_648),
        (2, 2, 44_991_376),
        (3, 1, 100_537_864),
        (3, 2, 100_846_992),
    ],
)
def test_preact_resnet_parameter_counts_equal_the_authors(width, M, params):
    with torch.device("meta"):
        model = MODELS.get("preact_resnet").build(18, width, 200, M)
    assert count_parameters(model) == params


@pytest.mark.parametrize("warmup_epochs", [0.1, 0.37, 1.0, 2.5])
def test_the_lr_never_exceeds_its_target(warmup_epochs):
    cfg = tiny_config(warmup_epochs=warmup_epochs, epochs=10, milestones=[101], base_lr=0.05)
    steps = 157
    lrs = [learning_rate(cfg, e, s, steps) for e in range(3) for s in range(steps)]
    assert max(lrs) == pytest.approx(cfg.learning_rate) and max(lrs) <= cfg.learning_rate
    assert lrs == sorted(lrs)  # a monotone ramp, then flat


def test_an_epoch_drops_its_last_partial_batch_by_default():
    arrays = ImageArrays(np.zeros((10_000, 4, 4, 3), np.uint8), np.zeros(10_000, np.int64))
    loader = TrainLoader(arrays, Sampling(64, 1), device=torch.device("cpu"), **RAW)
    assert len(loader) == 156 and len(list(loader.sample_indices())) == 156  # the authors' count
    assert all(len(i) == 64 for i in loader.sample_indices())
    keep = TrainLoader(arrays, Sampling(64, 1, drop_last=False), device=torch.device("cpu"), **RAW)
    assert len(keep) == 157


def test_the_patch_probability_follows_the_epoch_by_default():
    cfg = tiny_config(epochs=5, p=0.5)
    by_epoch = [
        patch_probability(cfg.p, training_progress(cfg, e, s, 100), cfg.p_decay_start)
        for e in range(5)
        for s in (0, 99)
    ]
    assert by_epoch == [0.5] * 8 + [0.0, 0.0]  # constant within an epoch; the last epoch (ratio 5/5) has p = 0
    per_step = tiny_config(epochs=5, p=0.5, p_clock="step")
    last = [patch_probability(0.5, training_progress(per_step, 4, s, 100), per_step.p_decay_start) for s in (0, 99)]
    # per step: 4/5 = 0.8 is before the decay (p = 0.5); 4.99/5 is 0.002 from the end: p = 0.5 * 0.002 * 12
    assert last[0] == 0.5 and last[1] == pytest.approx(0.5 * 0.002 * 12)


def test_tace_by_hand():
    # two classes, four images with labels 1, 0, 1, 0 and class-1 probabilities 0.9, 0.8, 0.3, 0.2
    p1 = torch.tensor([0.9, 0.8, 0.3, 0.2])
    logits = torch.stack([torch.log(1 - p1), torch.log(p1)], 1)
    labels = torch.tensor([1, 0, 1, 0])
    # 2 bins of 2. class 1 sorted 0.2, 0.3 | 0.8, 0.9 with hits 0, 1 | 0, 1: |0.25 - 0.5| + |0.85 - 0.5| = 0.6;
    # class 0 sorted 0.1, 0.2 | 0.7, 0.8 with hits 0, 1 | 0, 1: |0.15 - 0.5| + |0.75 - 0.5| = 0.6;
    # each bin weighs its size 2, over N * K = 8: (0.6 + 0.6) * 2 / 8 = 0.3
    assert tace(logits, labels, bins=2) == pytest.approx(0.3)
    # threshold 0.25, one bin: class 1 keeps 0.3, 0.8, 0.9 (hits 1, 0, 1): |2/3 - 2/3| = 0;
    # class 0 keeps 0.7, 0.8 (hits 0, 1): |0.75 - 0.5| = 0.25, weight 2 -> 0.5 / 8
    assert tace(logits, labels, bins=1, threshold=0.25) == pytest.approx(0.5 / 8)


def _tace_per_class(logits, labels, bins=15, threshold=1e-3):
    """TACE as the authors' definition reads, class by class and bin by bin (the loop the vectorised one replaced)."""
    probs = logits.float().softmax(-1)
    n, k = probs.shape
    total = 0.0
    for c in range(k):
        conf, order = probs[:, c].sort()
        hit = (labels[order] == c).float()
        conf, hit = conf[conf > threshold], hit[conf > threshold]
        size = len(conf) // bins
        for i in range(bins):
            start, end = i * size, (i + 1) * size if i < bins - 1 else len(conf)
            if end > start:
                total += (conf[start:end].double().mean() - hit[start:end].double().mean()).abs().item() * (end - start)
    return total / (n * k)


@pytest.mark.parametrize("n, k, bins", [(1000, 20, 15), (37, 5, 4), (500, 100, 15), (10, 3, 15)])
def test_tace_equals_its_per_class_definition(n, k, bins):
    g = torch.Generator().manual_seed(n + k)
    logits, labels = torch.randn(n, k, generator=g) * 3, torch.randint(0, k, (n,), generator=g)
    assert tace(logits, labels, bins) == pytest.approx(_tace_per_class(logits, labels, bins), abs=1e-9)


def test_auroc_by_hand_with_ties():
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: pairs (pos, neg) = (0.5, 0.5) 1/2, (0.5, 0.2) 1,
    # (0.9, 0.5) 1, (0.9, 0.2) 1 -> 3.5 / 4
    assert auroc(torch.tensor([0.5, 0.5, 0.2, 0.9]), torch.tensor([1, 0, 0, 1])) == pytest.approx(0.875)
    assert auroc(torch.tensor([0.3, 0.3]), torch.tensor([1, 0])) == pytest.approx(0.5)
    assert math.isnan(auroc(torch.tensor([0.3, 0.4]), torch.tensor([1, 1])))
    # misclassification AUROC: confident right, unsure wrong -> 1
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [0.0, 0.2]])
    assert misclassification_auroc(logits, torch.tensor([0, 1, 1, 0])) == pytest.approx(1.0)


@pytest.mark.slow  # trains or builds reports: the full lane
def test_metrics_json_carries_tace_and_the_misclassification_auroc(tmp_path):
    from harness.trial.trainer import Trainer

    metrics = Trainer(tiny_config(epochs=1, output_dir=tmp_path)).run()
    assert 0 <= metrics["tace"] < 1 and 0 <= metrics["misclassification_auroc"] <= 1
