"""LogME: how well a model's frozen features suit a labelled data set, without training anything.

You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021. Each target column y (one per class, one-hot) is modelled as y = F w + noise with a prior
w ~ N(0, alpha^-1 I) and noise precision beta. The log marginal evidence

    L(alpha, beta) = n/2 log beta + D/2 log alpha - n/2 log(2 pi)
                     - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log|A|,
    A = alpha I + beta F^T F,   m = beta A^-1 F^T y,

is maximised over (alpha, beta) by MacKay's fixed point, and the score is the mean over targets of
max L / n.

Everything is expressed in the thin SVD F = U diag(sigma) V^T (r = min(n, D) singular values,
s = sigma^2 the non-trivial eigenvalues of F^T F, the other D - r being zero), with z = U^T y and
p = ||y - U z||^2 (the part of y outside the column space of F). The iteration runs on the variances
a = 1/alpha and b = 1/beta, where v_i = a s_i + b is the marginal variance of z_i:

    gamma         = sum_i a s_i / v_i                  n - gamma = (n - r) + sum_i b / v_i
    m^T m         = a^2 sum_i s_i z_i^2 / v_i^2        ||F m - y||^2 = b^2 sum_i z_i^2 / v_i^2 + p
    a <- m^T m / gamma                                 b <- ||F m - y||^2 / (n - gamma)
    L = -1/2 sum_i (log(2 pi v_i) + z_i^2 / v_i) - (n - r)/2 log(2 pi b) - p / (2 b)

(the same iteration and evidence as the paper's, by the matrix determinant and inversion lemmas).
Variances matter because the maximum often lies at a boundary: features unrelated to a class drive
alpha to infinity (a -> 0), and with n <= D a class inside the span of F drives beta to infinity
(b -> 0). In precisions those runs overflow; in variances they shrink geometrically while L
converges, so convergence is judged on L. After one SVD, shared by all targets, a step costs O(r K).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..core.errors import DataError

# Stop a target once one step changes its log evidence by less than this per example. The fixed point
# converges linearly (slowest at a boundary maximum, ratio ~0.97 per step in practice), so the evidence
# left to gain is at most a few dozen steps' worth: far below any difference a ranking rests on.
_TOL = 1e-12
_MAX_ITER = 10_000
# Floor for the marginal variances: a zero singular value with a zero coefficient, at beta = infinity,
# would otherwise give 0 / 0.
_TINY = 1e-300


@dataclass(frozen=True)
class LogMEFit:
    """Per-target result of the evidence maximisation (arrays of shape [K]).

    alpha or beta is infinite where the maximum lies at that boundary (see the module docstring).
    """

    alpha: np.ndarray
    beta: np.ndarray
    evidence: np.ndarray  # maximised log evidence, not divided by n
    iterations: int  # steps taken by the slowest target
    converged: bool  # every target met the tolerance before the iteration cap


def logme_score(features: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> float:
    """LogME of features [n, D] for integer class labels [n]; higher means the features transfer better.

    Implements You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning" (ICML 2021): for each class, the log marginal evidence of a Bayesian linear model from
    the features to that class's one-hot target, maximised over the prior and noise precisions and
    divided by the number of examples; the score is the mean over classes.

    The number is a log-likelihood per example, so only its order matters: it ranks several models'
    features on the SAME examples and labels. Higher means a linear model on those features explains
    the labels better, which the paper shows tracks accuracy after fine-tuning. It is not comparable
    across data sets, label sets or sample sizes. Features are used as given (no centring or scaling).

    `num_classes`, when given, checks that every label lies in [0, num_classes). Classes without any
    example are left out of the mean: their all-zero target says nothing about the features.
    """
    features = _check_features(features)
    labels = _check_labels(labels, features.shape[0], num_classes)
    present = np.unique(labels)
    targets = (labels[:, None] == present[None, :]).astype(np.float64)
    fit = logme_fit(features, targets)
    if not fit.converged:
        warnings.warn(
            f"LogME did not converge in {_MAX_ITER} steps; the score is a lower bound of the true one.",
            RuntimeWarning,
            stacklevel=2,
        )
    return float(np.mean(fit.evidence) / features.shape[0])


def logme_fit(features: np.ndarray, targets: np.ndarray) -> LogMEFit:
    """Maximise the LogME evidence for real-valued targets [n, K] (or [n]) on features [n, D]."""
    features = _check_features(features)
    targets = _check_targets(targets, features.shape[0])
    n = features.shape[0]

    u, sigma, _ = np.linalg.svd(features, full_matrices=False)
    if not np.any(sigma > 0):
        raise DataError("features are all zero; LogME needs features that vary across examples.")
    r = sigma.size
    s = (sigma**2)[:, None]  # [r, 1]
    z = u.T @ targets  # [r, K]
    z2 = z**2
    if r == n:  # U is square, so y - U U^T y is zero (computing it would give only rounding noise)
        outside = np.zeros(targets.shape[1])
    else:  # computed directly, not as ||y||^2 - ||z||^2, which cancels badly for well-fitted targets
        outside = np.sum((targets - u @ z) ** 2, axis=0)

    k = targets.shape[1]
    a, b = np.ones(k), np.ones(k)  # the paper starts from alpha = beta = 1
    evidence = _evidence(a, b, s, z2, outside, n)
    active = np.arange(k)
    iteration = 0
    while active.size and iteration < _MAX_ITER:
        iteration += 1
        sa, sb, sz2, sout = a[active], b[active], z2[:, active], outside[active]
        v = np.maximum(sa * s + sb, _TINY)  # [r, |active|]
        w = sz2 / v**2
        new_a = sa * np.sum(s * w, axis=0) / np.sum(s / v, axis=0)  # m^T m / gamma, one factor a cancelled
        new_b = (sb**2 * np.sum(w, axis=0) + sout) / ((n - r) + sb * np.sum(1 / v, axis=0))
        a[active], b[active] = new_a, new_b
        new_evidence = _evidence(new_a, new_b, s, sz2, sout, n)
        done = np.abs(new_evidence - evidence[active]) < _TOL * n
        evidence[active] = new_evidence
        active = active[~done]

    with np.errstate(divide="ignore"):
        alpha, beta = 1 / a, 1 / b
    return LogMEFit(alpha=alpha, beta=beta, evidence=evidence, iterations=iteration, converged=active.size == 0)


def _evidence(a: np.ndarray, b: np.ndarray, s: np.ndarray, z2: np.ndarray, outside: np.ndarray, n: int) -> np.ndarray:
    """Log marginal evidence per target at prior variance a and noise variance b."""
    r = s.shape[0]
    v = np.maximum(a * s + b, _TINY)
    inside = -0.5 * np.sum(np.log(2 * np.pi * v) + z2 / v, axis=0)
    if r == n:
        return inside
    return inside - 0.5 * (n - r) * np.log(2 * np.pi * b) - 0.5 * outside / b


def _check_targets(targets: np.ndarray, n: int) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[0] != n or targets.shape[1] < 1:
        raise DataError(f"targets have shape {targets.shape} but features have {n} rows; pass one row per example.")
    if not np.all(np.isfinite(targets)):
        raise DataError("targets contain NaN or infinity; remove or fix those examples.")
    if np.any(np.all(targets == 0, axis=0)):
        raise DataError("a target column is all zero, so its evidence is unbounded; drop that column.")
    return targets


def _check_features(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise DataError(f"features have shape {features.shape}; pass a non-empty 2-D array [examples, dims].")
    if not np.all(np.isfinite(features)):
        raise DataError("features contain NaN or infinity; check the model's outputs (e.g. fp16 overflow).")
    return features


def _check_labels(labels: np.ndarray, n: int, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise DataError(f"labels have shape {labels.shape} but features have {n} rows; pass one label per row.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels have dtype {labels.dtype}; pass integer class ids.")
    if labels.size and labels.min() < 0:
        raise DataError(f"labels contain {labels.min()}; class ids must be non-negative.")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise DataError(f"labels contain {labels.max()} but num_classes is {num_classes}; pass the right num_classes.")
    if np.unique(labels).size < 2:
        raise DataError("labels hold fewer than 2 distinct classes; LogME compares how features separate classes.")
    return labels
