from harness.methods import register_method
from harness.methods.base import Method
from harness.methods.member_batches import shared_images
from harness.models.ensemble_layers import is_fast_weight

# The fast weights (r, s) learn at half the lr and carry no L2 (uncertainty-baselines' batchensemble.py:
# fast_weight_lr_multiplier 0.5; its L2 regularises kernels, batch norms and biases only)
FAST_WEIGHT_LR_SCALE = 0.5


@register_method("batch_ensemble")
class BatchEnsemble(Method):
    """BatchEnsemble (Wen et al. 2020): M members share every layer's weight W and differ by rank-1 fast weights
    r_i s_i^T and biases; each training image goes to every member (docs/recipe.md §8)."""

    order, color, marker = 6, "#ff7f0e", "X"  # the report: tables' order, plots' colour and marker

    default_M = 4  # uncertainty-baselines' ensemble_size
    single_network = False
    network = "batch_ensemble"

    @classmethod
    def param_groups(cls, model, cfg):
        named = list(model.named_parameters())
        return [
            {"params": [p for n, p in named if not is_fast_weight(n)], "lr_scale": 1.0},
            {
                "params": [p for n, p in named if is_fast_weight(n)],
                "weight_decay": 0.0,
                "lr_scale": FAST_WEIGHT_LR_SCALE,
            },
        ]

    @classmethod
    def train_row(cls, M):
        return (1, 1)

    def prepare(self, x, y, progress):
        return shared_images(x, y, self.M, self.num_classes)
