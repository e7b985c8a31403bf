"""The method interface: pair inputs, draw mixing masks and target weights, compute the loss.

A method turns a loader batch (images, labels) into a ``MixedBatch`` for an M-input model:
M independent permutations of the batch fill the M input slots; an optional sample
augmentation (Mixup/CutMix) is applied to each input; ``mixing`` draws the mixing masks and
ratios; the soft targets are scaled by the loss weights w_i = M lam_i^(1/r) / sum_j lam_j^(1/r).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.registry import Option
from harness.methods.mixing import box_masks, loss_weights, sample_beta

if TYPE_CHECKING:
    from harness.core.config import TrialConfig

PartnerSource = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # k -> (images, labels) of k training images


@dataclass
class MixedBatch:
    """What a method's ``prepare`` returns for one training step: B rows, each with M input slots.

    ``inputs`` (B, M, C, H, W): the images of each row's M slots (M = 1 for a single network); ``mix`` (B, M, 1, h, w)
    or None: the weights the model's mixing block multiplies the M encoded inputs by (MixMo's masks x M; None: their
    plain sum); ``targets`` (B, heads, K): each head's soft target, already scaled by its loss weight; ``labels``
    (B, heads): each head's hard label, for the training accuracy. ``heads`` is what the model returns in training
    (M for multi-input networks); the trainer checks these shapes against the model's logits at the first step."""

    inputs: torch.Tensor  # (B, M, C, H, W)
    mix: torch.Tensor | None  # (B, M, 1, h, w) weights of the model's mixing block; None = plain sum
    targets: torch.Tensor  # (B, M, K) soft targets, already scaled by the loss weights
    labels: torch.Tensor  # (B, M) the hard label of each input (for train accuracy)

    def select(self, rows: slice) -> "MixedBatch":
        """A slice of the batch (a worker's shard, a micro-batch)."""
        return MixedBatch(
            self.inputs[rows], None if self.mix is None else self.mix[rows], self.targets[rows], self.labels[rows]
        )


@dataclass
class Loop:
    """What a method's hooks see of the training loop (harness.trial.trainer.Trainer), read and changed in place."""

    model: torch.nn.Module  # the network trained: a WeightMembers when the method keeps weight states
    optimizer: torch.optim.Optimizer  # the engine's SGD (the lr of its groups is set from ``Method.schedule``)
    epochs: int  # of the trial
    steps_per_epoch: int
    train_images: Callable[[], Iterator[torch.Tensor]]  # one pass over the training images (augmented, normalised)
    epoch: int = 0  # the epoch in progress, from 0 (after_epoch: the one that just ended)
    step: int = 0  # optimizer steps done in this epoch
    lr: float = 0.0  # the last learning rate set

    @property
    def global_step(self) -> int:
        """Optimizer steps done since the start of training."""
        return self.epoch * self.steps_per_epoch + self.step

    @property
    def progress(self) -> float:
        """The share of training done, in [0, 1]."""
        return self.global_step / (self.epochs * self.steps_per_epoch)


# a full stop that ends no sentence: "et al.", "e.g.", "i.e.", "vs.", "Fig.", "Eq.", "Sec.", an initial ("J. Smith")
_NOT_AN_END = r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\bFig)(?<!\bEq)(?<!\bSec)(?<!\b[A-Z])"
_SENTENCE_END = re.compile(_NOT_AN_END + r"\.\s")


def first_sentence(text: str) -> str:
    """The first sentence of a docstring's first paragraph, whole ("MIMO (Havasi et al., 2021) ...", not
    "MIMO (Havasi et al.")."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    return _SENTENCE_END.split(paragraph, maxsplit=1)[0].rstrip(".") + "."


class Method:
    """A method: subclass it, declare what differs, and register it (``@register_method("name")``)."""

    name = ""  # set by register_method
    default_M = 1
    single_network = True  # M must be 1
    sample_augmentation: str | None = None  # fixed MSDA of the single-network baselines
    network = "multi_io"  # the network family it trains (a model's `networks`; harness.models.ensembles)
    options: dict[str, Option] = {}  # its own trial keys (the keys of other methods are refused)
    # the report: label (None: the name), position in tables and legends, colour (None: from the name), marker
    label: str | None = None
    order: float = 100
    # bumped when the method computes something else for the same keys (a default changed): in the trial id when
    # non-zero, so that older results of this method are not reused (harness.trial.catalog)
    revision = 0
    color: str | None = None
    marker: str = "o"

    @classmethod
    def option(cls, cfg: TrialConfig, key: str):
        """A key of this method: the trial's value, else the method's default."""
        return cfg.options.get(key, cls.options[key].default)

    @classmethod
    def help(cls) -> str:
        """Its docstring's first sentence."""
        return first_sentence(cls.__doc__ or "")

    @classmethod
    def param_groups(cls, model: torch.nn.Module, cfg: TrialConfig) -> list[dict]:
        """The optimizer's parameter groups: SGD keys (``weight_decay``) and ``lr_scale``, a factor on the scheduled
        learning rate. One group of every parameter by default."""
        return [{"params": [p for p in model.parameters()], "lr_scale": 1.0}]

    @classmethod
    def reference_masks(
        cls, cfg: TrialConfig, M: int, size: int, progress: float, rng: np.random.Generator
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """For `harness bench`'s reference pipeline (the authors' per-sample data path): one sample's masks
        (M, 1, s, s) summing to 1 over M (None: the plain sum) and ratios (M,), drawn with numpy. The default is
        the plain sum, right for a method that keeps ``mixing`` and ``prepare`` as they are."""
        if cls.mixing is not Method.mixing or cls.prepare is not Method.prepare:
            raise NotImplementedError(
                f"method {cfg.method!r} changes mixing or prepare but declares no reference_masks: `harness bench` "
                "has no reference pipeline for it"
            )
        return None, np.full(M, 1.0 / M, np.float32)

    @classmethod
    def network_options(cls, cfg: TrialConfig) -> dict:
        """Keyword arguments of its network's builder."""
        return {}

    @classmethod
    def train_row(cls, cfg: TrialConfig) -> tuple[int, float]:
        """(image slots of a training row, loader images it holds), for the FLOP count: MixMo's M inputs come from
        M permutations of the batch, one row per batch image."""
        return cfg.num_inputs, 1

    @classmethod
    def check_config(cls, cfg: TrialConfig) -> None:
        """The method's own checks (harness.core.config checks M of single networks, models and other methods' keys)."""
        M = cfg.num_inputs
        if not cls.single_network and M < 2:
            raise ValueError(f"method {cfg.method!r} needs M >= 2 subnetworks, got {M} (it is an ensemble method)")
        if cls.single_network and cfg.msda != "none":
            raise ValueError("msda is for multi-input methods; for a single network use method: mixup or cutmix")
        if cls.network != "multi_io" and cfg.msda != "none":
            raise ValueError(f"msda (Mixup/CutMix on each input) is for MixMo's multi-input methods, not {cfg.method}")

    # --- the training loop (harness.trial.trainer): a method that changes how training runs (ensembles in time)
    @classmethod
    def weight_members(cls, cfg: TrialConfig) -> int:
        """Members that are weight states of one network (Snapshot, FGE, SWAG): S > 1 builds the network once per
        member inside a harness.models.WeightMembers (the hooks fill them; each is evaluated as a member and counted
        in parameters and inference cost); 0, the default, builds the network as its family does."""
        return 0

    def schedule(self, lr: float, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The learning rate of a step: ``lr`` is the recipe's (warmup, then step decay at the milestones); return it
        scaled, or a schedule of the method's own. Called before every optimizer step; history.csv logs the last of
        each epoch. ``epoch`` counts from 0, ``step`` is the step within the epoch."""
        return lr

    def after_step(self, loop: Loop) -> None:
        """After every optimizer step (``loop.step`` steps done in ``loop.epoch``): may read or change the model."""

    def after_epoch(self, loop: Loop) -> None:
        """After every epoch's last step, before its evaluation and checkpoint (so what it keeps resumes)."""

    def after_training(self, loop: Loop) -> None:
        """Once, after the last epoch and before the final evaluation: e.g. averaged weights put in place, batch-norm
        statistics recomputed (harness.models.weight_members.recompute_batch_norm over ``loop.train_images``). Its
        result is checkpointed before the evaluation, and a resumed trial does not run it twice."""

    def state_dict(self) -> dict:
        """The method's own training state (running averages, moments), saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Back from ``state_dict`` on resume."""

    def __init__(self, cfg: TrialConfig, num_classes: int, mix_size: int, partners: PartnerSource | None = None):
        self.cfg = cfg
        self.M = cfg.num_inputs
        self.num_classes = num_classes
        self.mix_size = mix_size  # side of the encoded feature map the masks apply to
        self.msda = self.sample_augmentation or cfg.msda
        # where Mixup/CutMix partners come from: k images drawn from the training set (the authors'), or,
        # without a source, the batch itself
        self.partners = partners

    # --- to override
    def mixing(self, n: int, progress: float, device) -> tuple[torch.Tensor | None, torch.Tensor]:
        """-> (masks (n, M, 1, h, w) summing to 1 over M, or None for the plain sum; ratios lam (n, M))."""
        return None, torch.full((n, self.M), 1.0 / self.M, device=device)

    def mix_weights(self, masks: torch.Tensor) -> torch.Tensor:
        """Scale of the mix: MixMo multiplies by M so that the mixed features keep the sum's scale."""
        return self.M * masks

    # --- shared
    def prepare(self, x: torch.Tensor, y: torch.Tensor, progress: float) -> MixedBatch:
        """A loader batch -> the step's MixedBatch. ``x`` (n, C, H, W) normalised, augmented images on the device,
        ``y`` (n,) labels, ``progress`` the clock of the schedules in (0, 1] (harness.core.schedule.training_progress).
        The default: M permutations of the batch fill the M slots, ``mixing`` draws masks and ratios, an optional
        Mixup/CutMix per input, targets scaled by the loss weights. Override it for rows of another kind (members fed
        directly, RegMixup's clean and mixed rows); its shapes are checked against the model's heads at the first
        step (help(MixedBatch))."""
        n, dev = x.shape[0], x.device
        if self.M == 1:
            order = torch.arange(n, device=dev).unsqueeze(1)
        else:
            order = torch.stack([torch.randperm(n, device=dev) for _ in range(self.M)], dim=1)
        inputs, labels = x[order], y[order]  # (n, M, C, H, W), (n, M)
        targets = F.one_hot(labels, self.num_classes).float()
        masks, lams = self.mixing(n, progress, dev)
        if self.msda != "none":
            inputs, targets = self._sample_augmentation(inputs, targets, x, y, masks)
        targets = targets * loss_weights(lams, self.cfg.r).unsqueeze(-1)
        mix = None if masks is None else self.mix_weights(masks)
        return MixedBatch(inputs, mix, targets, labels)

    def _sample_augmentation(self, inputs, targets, x, y, masks):
        """Mixup or CutMix on each input, with probability msda_prob per input; the partner is a training
        image drawn uniformly (from the partner source, else from the batch). Under a MixMo mask, the label
        ratio is the partner's share of the part of the input that the mask keeps, and, as in the authors'
        code, the two images swap roles when the partner would get the larger share: an input's own label
        always keeps at least half."""
        n, M, _, H, W = inputs.shape
        dev = inputs.device
        if self.partners is not None:
            partner_x, partner_y = self.partners(n * M)
            partner_x, partner_y = partner_x.view(n, M, *partner_x.shape[1:]), partner_y.view(n, M)
        else:
            index = torch.randint(0, n, (n, M), device=dev)
            partner_x, partner_y = x[index], y[index]
        applied = (torch.rand(n, M, device=dev) < self.cfg.msda_prob).float()
        ratio = sample_beta(self.cfg.msda_alpha, n * M, dev).view(n, M) * applied
        if self.msda == "mixup":
            paste = ratio.view(n, M, 1, 1, 1).expand(n, M, 1, H, W)
        else:
            paste = box_masks(ratio.flatten(), H, W).view(n, M, 1, H, W) * applied.view(n, M, 1, 1, 1)
        if masks is None or self.M == 1:
            kappa = paste.mean((2, 3, 4))
        else:
            visible = (
                F.interpolate(masks.flatten(0, 1), size=(H, W), mode="nearest").view(n, M, 1, H, W)
                if masks.shape[-1] > 1
                else masks.expand(n, M, 1, H, W)
            )
            kappa = (paste * visible).sum((2, 3, 4)) / visible.sum((2, 3, 4)).clamp_min(1e-12)
            kappa = torch.where(visible.sum((2, 3, 4)) > 0, kappa, paste.mean((2, 3, 4)))
            swap = kappa > 0.5  # the partner would dominate: it becomes the background, the own image the paste
            paste = torch.where(swap.view(n, M, 1, 1, 1), 1 - paste, paste)
            kappa = torch.where(swap, 1 - kappa, kappa)
        mixed = inputs * (1 - paste) + partner_x * paste
        partner_targets = F.one_hot(partner_y, self.num_classes).float()
        k = kappa.unsqueeze(-1)
        return mixed, (1 - k) * targets + k * partner_targets

    @staticmethod
    def loss(logits: torch.Tensor, batch: MixedBatch) -> torch.Tensor:
        """Soft-target cross-entropy, summed over the M heads, averaged over the batch."""
        return -(batch.targets * logits.float().log_softmax(-1)).sum((-1, -2)).mean()
