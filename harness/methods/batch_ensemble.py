"""BatchEnsemble: M members sharing every weight, differing by rank-1 fast weights."""

from harness.methods import register_method
from harness.methods.base import Method
from harness.methods.member_batches import shared_images
from harness.models.ensemble_layers import BatchEnsembleLinear, is_fast_weight

# uncertainty-baselines' batchensemble.py (commit 0dbf6f6): `fast_weight_lr_multiplier` 0.5 scales the gradient of
# every variable that is neither a kernel nor a batch norm: the fast weights r, s and the classifier's per-member
# biases; its L2 (kernel, batch norm and bias regularisers) leaves the fast weights out.
FAST_WEIGHT_LR_SCALE = 0.5


@register_method("batch_ensemble")
class BatchEnsemble(Method):
    """BatchEnsemble (Wen et al. 2020): M members share every layer's weight W and differ by rank-1 fast weights
    r_i s_i^T and biases; each training image goes to every member (docs/recipe.md §8)."""

    order, color, marker = 6, "#ff7f0e", "X"  # the report: tables' order, plots' colour and marker

    default_M = 4  # uncertainty-baselines' ensemble_size
    single_network = False
    network = "batch_ensemble"
    revision = 1  # the classifier's per-member biases at half the lr, as the reference (1.0 before)

    @classmethod
    def param_groups(cls, model, cfg):
        biases = {id(m.bias) for m in model.modules() if isinstance(m, BatchEnsembleLinear)}
        named = list(model.named_parameters())
        half_lr = [p for n, p in named if id(p) in biases]
        fast = [p for n, p in named if is_fast_weight(n)]
        slow = [p for n, p in named if id(p) not in biases and not is_fast_weight(n)]
        return [
            {"params": slow, "lr_scale": 1.0},
            {"params": fast, "weight_decay": 0.0, "lr_scale": FAST_WEIGHT_LR_SCALE},
            {"params": half_lr, "lr_scale": FAST_WEIGHT_LR_SCALE},  # with L2, at half the lr
        ]

    @classmethod
    def train_row(cls, cfg):
        return (1, 1)

    def prepare(self, x, y, progress):
        return shared_images(x, y, self.M, self.num_classes)
