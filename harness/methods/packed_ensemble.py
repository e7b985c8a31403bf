"""Packed-Ensembles: the members as M channel groups of one wider network."""

from harness.methods import Option, register_method
from harness.methods.base import Method
from harness.methods.member_batches import shared_images
from harness.models.ensemble_layers import packed_groups


@register_method("packed_ensemble")
class PackedEnsemble(Method):
    """Packed-Ensembles (Laurent et al. 2023): the members are M channel groups (alpha times wider, gamma
    subgroups each) of one grouped network; each training image goes to every member (docs/recipe.md §8)."""

    order, color, marker = 7, "#17becf", "h"  # the report: tables' order, plots' colour and marker

    default_M = 4
    single_network = False
    network = "packed_ensemble"
    options = {
        "packed_alpha": Option(2.0, "channel width factor alpha of the packed network", gt=0),
        # the paper's and torch-uncertainty's WRN-28-10 recipe (alpha 2, gamma 2, M 4); revision 1: gamma was 1
        "packed_gamma": Option(2, "subgroups per member gamma (groups of each member's convolutions)", ge=1),
    }
    revision = 1

    @classmethod
    def network_options(cls, cfg):
        return {"alpha": cls.option(cfg, "packed_alpha"), "gamma": cls.option(cfg, "packed_gamma")}

    @classmethod
    def check_config(cls, cfg):
        super().check_config(cfg)
        alpha, gamma, M = cls.option(cfg, "packed_alpha"), cls.option(cfg, "packed_gamma"), cfg.num_inputs
        w = cfg.width
        for c in (16, 16 * w, 32 * w, 64 * w):
            groups = packed_groups(c, alpha, M, gamma)
            if int(c * alpha) % groups or int(c * alpha) < groups:
                raise ValueError(
                    f"packed_alpha {alpha:g} x {c} channels = {int(c * alpha)} do not split into M x packed_gamma = "
                    f"{groups} groups: choose packed_alpha, packed_gamma and M so that M x packed_gamma divides "
                    f"alpha x 16, alpha x 16w, alpha x 32w and alpha x 64w"
                )

    @classmethod
    def train_row(cls, cfg):
        return (1, 1)

    def prepare(self, x, y, progress):
        return shared_images(x, y, self.M, self.num_classes)
