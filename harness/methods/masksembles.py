"""Masksembles: M fixed binary channel masks before every masked layer."""

from harness.methods import Option, register_method
from harness.methods.base import Method
from harness.methods.member_batches import shared_images, split_images


@register_method("masksembles")
class Masksembles(Method):
    """Masksembles (Durasov et al. 2021): M fixed binary channel masks before every masked layer, drawn once per
    run; in training each member gets its share of the batch (docs/recipe.md §8)."""

    order, color, marker = 8, "#bcbd22", "p"  # the report: tables' order, plots' colour and marker

    default_M = 4
    single_network = False
    network = "masksembles"
    options = {
        # torch-uncertainty's masked WRN-28-10 recipe
        "mask_scale": Option(2.0, "the masks' scale: larger = less overlap between members", ge=1, le=6),
        # split: each member gets 1/M of the batch (the Masksembles authors' training); repeat: every image to
        # every member (torch-uncertainty's masked WRN recipe repeats the batch M times)
        "mask_batch": Option("split", "split the batch among the members (authors'), or repeat it for each",
                             choices=("split", "repeat")),
    }  # fmt: skip

    @classmethod
    def network_options(cls, cfg):
        return {"scale": cls.option(cfg, "mask_scale"), "seed": cfg.seed}

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        if cls.option(cfg, "mask_batch") == "repeat":
            return
        shares = cfg.num_inputs * cfg.workers_per_trial * cfg.grad_accum_steps
        if cfg.batch_size % shares:
            raise ValueError(
                f"batch_size {cfg.batch_size}: masksembles shares each batch out to its M = {cfg.num_inputs} "
                f"members (on every worker and micro-batch): it must be a multiple of {shares}"
            )

    @classmethod
    def train_row(cls, cfg):
        M = cfg.num_inputs
        return (M, M) if cls.option(cfg, "mask_batch") == "split" else (1, 1)

    def prepare(self, x, y, progress):
        if self.option(self.cfg, "mask_batch") == "repeat":
            return shared_images(x, y, self.M, self.num_classes)
        return split_images(x, y, self.M, self.num_classes)
