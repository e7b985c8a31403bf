"""SWAG (Maddox et al., NeurIPS 2019): SWA's weights define a Gaussian, its mean the average, its covariance half a
diagonal and half a low-rank matrix of the last K deviations; M networks sampled from it are the members, each with
batch-norm statistics recomputed (docs/recipe.md)."""

from __future__ import annotations

import torch

from harness.core.registry import Option
from harness.methods import register_method
from harness.methods.time_ensembles import SWA_OPTIONS, Averaging
from harness.models.weight_members import recompute_batch_norm


@register_method("swag")
class SWAG(Averaging):
    """SWAG (Maddox et al., 2019): a Gaussian over the weights collected as SWA does (diagonal plus low-rank
    covariance), M networks sampled from it as the members."""

    order, color, marker = 63, "#9edae5", "H"
    default_M = 30  # Maddox et al.'s Bayesian model averaging: 30 samples
    options = {
        **SWA_OPTIONS,
        "swag_rank": Option(20, "K, the deviations kept for the low-rank covariance (Maddox et al.: 20)", ge=2),
        "swag_scale": Option(0.5, "the covariance's scale at sampling (Maddox et al.'s 1/2 on both terms)", gt=0),
    }

    @classmethod
    def weight_members(cls, cfg) -> int:
        return cfg.num_inputs

    def __init__(self, cfg, num_classes: int, mix_size: int, partners=None):
        super().__init__(cfg, num_classes, mix_size, partners)
        self.mean: dict[str, torch.Tensor] = {}
        self.sq_mean: dict[str, torch.Tensor] = {}
        self.deviations: dict[str, torch.Tensor] = {}  # (kept, numel): the last K deviations from the mean
        self.collected = 0

    @torch.no_grad()
    def collect(self, weights: dict[str, torch.Tensor]) -> None:
        """One more set of weights into the moments and deviations (torch-uncertainty's SWAG.update_wrapper)."""
        n, rank = self.collected, self.option(self.cfg, "swag_rank")
        for k, w in weights.items():
            w = w.detach().float().cpu()
            mean = self.mean.get(k, torch.zeros_like(w)) * n / (n + 1) + w / (n + 1)
            sq_mean = self.sq_mean.get(k, torch.zeros_like(w)) * n / (n + 1) + w**2 / (n + 1)
            deviation = (w - mean).reshape(1, -1)
            kept = torch.cat([self.deviations.get(k, deviation[:0]), deviation])[-rank:]
            self.mean[k], self.sq_mean[k], self.deviations[k] = mean, sq_mean, kept
        self.collected += 1

    @torch.no_grad()
    def sample(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Weights drawn from the Gaussian: mean + sqrt(scale) (sqrt(diag) z1 + D^T z2 / sqrt(K - 1))."""
        scale, rank = self.option(self.cfg, "swag_scale"), self.option(self.cfg, "swag_rank")
        out = {}
        for k, mean in self.mean.items():
            variance = torch.clamp(self.sq_mean[k] - mean**2, 1e-6)  # torch-uncertainty's var_clamp
            draw = variance.sqrt() * torch.randn(mean.shape, generator=generator)
            deviations = self.deviations[k]
            draw += (deviations.t() @ torch.randn(len(deviations), generator=generator)).view_as(mean) / (
                rank - 1
            ) ** 0.5
            out[k] = mean + scale**0.5 * draw
        return out

    def after_epoch(self, loop) -> None:
        if self.collects(loop.epoch):
            self.collect(self.weights(loop.model.live))

    @torch.no_grad()
    def after_training(self, loop) -> None:
        if not self.collected:
            return
        generator = torch.Generator().manual_seed(self.cfg.seed)  # the samples: a function of the trial's seed
        network = loop.model.live
        for i in range(loop.model.count):
            params = dict(network.named_parameters())
            for k, v in self.sample(generator).items():
                params[k].copy_(v.to(params[k]))
            recompute_batch_norm(network, loop.train_images)
            if i < loop.model.count - 1:
                loop.model.keep(i)  # the last sample stays in the live network

    def state_dict(self) -> dict:
        return {"mean": self.mean, "sq_mean": self.sq_mean, "deviations": self.deviations, "n": self.collected}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.sq_mean = state.get("mean", {}), state.get("sq_mean", {})
        self.deviations, self.collected = state.get("deviations", {}), state.get("n", 0)
