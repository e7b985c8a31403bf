from harness.methods.base import Method
from harness.methods.member_batches import shared_images


class BatchEnsemble(Method):
    """BatchEnsemble (Wen et al. 2020): M members share every layer's weight W and differ by rank-1 fast weights
    r_i s_i^T and biases; each training image goes to every member (docs/recipe.md §8)."""

    default_M = 4  # uncertainty-baselines' ensemble_size
    single_network = False
    network = "batch_ensemble"

    @classmethod
    def train_row(cls, M):
        return (1, 1)

    def prepare(self, x, y, progress):
        return shared_images(x, y, self.M, self.num_classes)
