"""Temperature scaling: the NLL-optimal temperature and the one protocol that fits and applies it (a validation
split's T, else the authors' test-set cross-fit)."""

from __future__ import annotations

import math

import torch

from harness.metrics.scores import ece, ensemble_logits, nll

LOG_T_BOUNDS = (-6.0, 6.0)  # T in [0.0025, 403]: past these the NLL is flat to float precision


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T). The NLL is convex in beta = 1/T (its
    derivative: E_p[z] - z_y, averaged; its second: Var_p[z] >= 0), so a safeguarded Newton solve on beta (float64,
    bisection when a step leaves the bracket) finds it in a few passes over the logits, no autograd."""
    z = logits.double()
    y = z.gather(1, labels[:, None]).squeeze(1)
    lo, hi = math.exp(-LOG_T_BOUNDS[1]), math.exp(-LOG_T_BOUNDS[0])  # the bracket on beta

    def derivatives(beta: float) -> tuple[float, float]:
        p = (z * beta).softmax(-1)
        mean = (p * z).sum(-1)
        return (mean - y).mean().item(), ((p * z * z).sum(-1) - mean * mean).mean().item()

    beta = 1.0
    for _ in range(100):
        grad, curvature = derivatives(beta)
        if grad > 0:
            hi = beta
        else:
            lo = beta
        step = beta - grad / curvature if curvature > 0 else float("nan")
        new = step if lo < step < hi else (lo + hi) / 2
        if abs(new - beta) <= 1e-10 * beta or hi - lo <= 1e-12 * hi:
            beta = new
            break
        beta = new
    return 1.0 / beta


def temperature_at_bound(t: float) -> bool:
    """Whether a fitted temperature stopped at the search's bracket (``LOG_T_BOUNDS``): the NLL still falls
    beyond it (confidences that carry no signal, or a split too small), so T is a bound, not an optimum."""
    return abs(abs(math.log(t)) - LOG_T_BOUNDS[1]) < 1e-6 if t > 0 else True


def calibrate(
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    val_logits: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    average: str = "probabilities",
) -> tuple[torch.Tensor, dict]:
    """The one temperature-scaling protocol: the ensemble's test logits scaled, and the record of it
    (temperatures, protocol, calibrated NLL and ECE). With a validation split, one T fitted on it. Without,
    the authors' cross-fit: T_a fitted on the first half of the test set scales the second half, T_b fitted
    on the second scales the first; every test image is scored by a temperature that never saw it, and the
    calibrated metrics are those of all N scaled images together."""
    ens = ensemble_logits(test_logits, average)
    if val_logits is not None:
        t = fit_temperature(ensemble_logits(val_logits, average), val_labels)
        info = {
            "temperature": t,
            "temperatures": [t],
            "calibration_protocol": f"T fitted on a held-out validation split ({len(val_labels)} train images)",
        }
        return _scored(ens / t, test_labels, info)
    half = len(test_labels) // 2
    t_a = fit_temperature(ens[:half], test_labels[:half])
    t_b = fit_temperature(ens[half:], test_labels[half:])
    scaled = torch.cat([ens[:half] / t_b, ens[half:] / t_a])
    info = {
        "temperature": (t_a + t_b) / 2,
        "temperatures": [t_a, t_b],
        "calibration_protocol": (
            f"test-set cross-fit (authors'): T fitted on each half of the {len(test_labels)} test images scales "
            f"the other half; metrics over all of them"
        ),
    }
    return _scored(scaled, test_labels, info)


def _scored(scaled: torch.Tensor, labels: torch.Tensor, info: dict) -> tuple[torch.Tensor, dict]:
    return scaled, {**info, "cal_nll": nll(scaled, labels), "cal_ece": ece(scaled, labels)}
