"""Intervals and tests of the report: t-intervals over seeds, bootstraps over test images."""

from __future__ import annotations

import functools

import numpy as np
import torch

from harness.metrics import correct, ensemble_logits


def t_halfwidth(std: float, n: int, level: float = 0.95) -> float:
    """Half-width of the two-sided t-interval of a mean of n values with sample std ``std``."""
    return float(_t_quantile(0.5 + level / 2, int(n) - 1) * std / n**0.5) if n >= 2 else float("nan")


@functools.lru_cache(maxsize=None)
def _t_quantile(q: float, dof: int) -> float:  # a report asks for the same few thousands of times
    from scipy.special import stdtrit  # scipy.stats.t.ppf's own function, without importing scipy.stats

    return float(stdtrit(dof, q))


def right_per_image(head_logits: np.ndarray, labels: np.ndarray, *, rule: str) -> np.ndarray:
    """Per test image, whether the ensemble of the heads (N, M, K) (combined by ``rule``) is right."""
    heads = torch.from_numpy(head_logits)
    return correct(ensemble_logits(heads, rule), torch.as_tensor(labels)).numpy()


BOOTSTRAP_DRAWS = 2000  # resamples of every bootstrap of the report (percentile intervals, p-values)


def bootstrap(
    a: np.ndarray, b: np.ndarray | None = None, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float]:
    """(half-width of the 95% percentile-bootstrap interval of mean(a), or of mean(a - b) paired over the same
    test images, and the two-sided bootstrap p-value of that mean being 0: twice the smaller tail)."""
    values = a.astype(float) - (0.0 if b is None else b.astype(float))
    index = _resampling(len(values), draws, seed)
    if np.array_equal(values, np.round(values)) and np.abs(values).max(initial=0) <= 1:  # right/wrong (differences)
        boot = values.astype(np.int8)[index].sum(1, dtype=np.int64) / len(values)  # exact sums: the same means
    else:
        boot = values[index].mean(1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return (high - low) / 2, float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))


@functools.lru_cache(maxsize=2)
def _resampling(n: int, draws: int, seed: int) -> np.ndarray:
    """The bootstrap's draws of image indices: the same for every trial of a report with n test images (drawn once;
    stored small: 2000 x 10,000 images in 40 MB)."""
    index = np.random.default_rng(seed).integers(0, n, (draws, n))
    index = index.astype(np.int16 if n <= np.iinfo(np.int16).max else np.int32)
    index.flags.writeable = False
    return index


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50% (rliable's aggregate; the mean itself for n <= 3)."""
    from scipy import stats

    return float(stats.trim_mean(np.asarray(values, float), 0.25))


def probability_of_improvement(
    x, y, higher: bool = True, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) + P(X = Y) / 2 over every pair of a run of X and a run of Y (the Mann-Whitney statistic, rliable's
    probability of improvement) and its 95% percentile interval from a bootstrap that resamples each side's runs
    on its own (stratified): always inside [0, 1]."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if not higher:
        x, y = -x, -y

    def p(a, b):  # a (..., n), b (..., m) -> P per leading index
        wins = (a[..., :, None] > b[..., None, :]) + 0.5 * (a[..., :, None] == b[..., None, :])
        return wins.mean(axis=(-2, -1))

    rng = np.random.default_rng(seed)
    draws_x, draws_y = np.empty((draws, len(x)), np.int64), np.empty((draws, len(y)), np.int64)
    for i in range(draws):  # the two sides drawn in turn from one stream, as rliable does
        draws_x[i], draws_y[i] = rng.integers(0, len(x), len(x)), rng.integers(0, len(y), len(y))
    low, high = np.quantile(p(x[draws_x], y[draws_y]), [0.025, 0.975])
    return float(p(x, y)), float(low), float(high)


def seeds_needed(difference: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Seeds per method for a two-sided test at ``alpha`` to detect ``difference`` with ``power``, runs spread by
    ``sd`` (normal approximation: 2 (z_{1-alpha/2} + z_power)^2 sd^2 / difference^2); inf for no difference."""
    from scipy import stats

    if not difference or sd != sd:
        return float("inf")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(max(2, np.ceil(2 * z**2 * sd**2 / difference**2)))
