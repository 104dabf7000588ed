"""LogME against a brute-force evaluation of the paper's evidence, and its behaviour as a score."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from hf_transfer.methods import logme
from hf_transfer.methods.logme import logme_fit, logme_score


def _paper_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The paper's formula, term by term, with an explicit inverse and slogdet."""
    n, d = features.shape
    a_matrix = alpha * np.eye(d) + beta * features.T @ features
    m = beta * np.linalg.inv(a_matrix) @ features.T @ y
    return (
        n / 2 * np.log(beta)
        + d / 2 * np.log(alpha)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * np.sum((features @ m - y) ** 2)
        - alpha / 2 * m @ m
        - 0.5 * np.linalg.slogdet(a_matrix)[1]
    )


def _marginal_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The same evidence as log N(y; 0, F F^T / alpha + I / beta), well conditioned where beta is huge."""
    n = features.shape[0]
    cov = features @ features.T / alpha + np.eye(n) / beta
    return -0.5 * (n * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + y @ np.linalg.solve(cov, y))


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return (labels[:, None] == np.unique(labels)[None, :]).astype(np.float64)


def _problem(n: int, d: int, rank: int | None, encoded: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 3)
    features = rng.normal(size=(n, d))
    if encoded:  # class means plus noise: most targets get an interior maximum
        features += 1.5 * rng.normal(size=(3, d))[labels]
    if rank is not None:  # rank-deficient: zero singular values must not upset anything
        features = features[:, :rank] @ rng.normal(size=(rank, d))
    return features, labels


CASES = [(40, 7, None), (10, 25, None), (30, 12, 4), (8, 20, 5)]


@pytest.mark.parametrize("encoded", [False, True])
@pytest.mark.parametrize(("n", "d", "rank"), CASES)
def test_fixed_point_matches_brute_force_and_is_the_maximum(n: int, d: int, rank: int | None, encoded: bool) -> None:
    features, labels = _problem(n, d, rank, encoded, seed=n + d)
    targets = _one_hot(labels)
    fit = logme_fit(features, targets)
    assert fit.converged
    assert np.all(np.isfinite(fit.evidence))

    paper_checked = 0
    for k in range(targets.shape[1]):
        y, alpha, beta = targets[:, k], fit.alpha[k], fit.beta[k]
        assert _marginal_evidence(features, y, alpha, beta) == pytest.approx(fit.evidence[k], rel=1e-10, abs=1e-9)
        # Where beta runs to infinity, A = alpha I + beta F^T F is too ill-conditioned for a float64
        # inverse; the paper's formula is then checked only through its equivalent marginal form above.
        if np.linalg.cond(alpha * np.eye(d) + beta * features.T @ features) < 1e8:
            assert _paper_evidence(features, y, alpha, beta) == pytest.approx(fit.evidence[k], rel=1e-9, abs=1e-8)
            paper_checked += 1

        def negative(log_params: np.ndarray, y: np.ndarray = y) -> float:
            return -_marginal_evidence(features, y, np.exp(log_params[0]), np.exp(log_params[1]))

        best = max(
            -minimize(negative, np.array(start), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10}).fun
            for start in [(0.0, 0.0), (-4.0, 4.0), (10.0, 2.0)]
        )
        assert best <= fit.evidence[k] + 1e-8 * n
        assert best >= fit.evidence[k] - 1e-4  # the optimiser did find the same maximum: the comparison is real
    if not encoded and rank is None and n > d:
        assert paper_checked == targets.shape[1]
    assert paper_checked >= 1


def test_score_is_mean_evidence_per_example_and_ignores_absent_classes() -> None:
    features, labels = _problem(40, 7, None, encoded=True, seed=0)
    fit = logme_fit(features, _one_hot(labels))
    assert logme_score(features, labels) == pytest.approx(np.mean(fit.evidence) / 40, rel=1e-12)
    # classes 3 and 4 have no example: same score, not NaN or infinity
    assert logme_score(features, labels, num_classes=5) == pytest.approx(logme_score(features, labels), rel=1e-12)


def test_targets_run_together_as_they_would_alone() -> None:
    features, labels = _problem(10, 25, None, encoded=True, seed=3)
    targets = _one_hot(labels)
    together = logme_fit(features, targets)
    for k in range(targets.shape[1]):
        alone = logme_fit(features, targets[:, k])
        assert alone.evidence[0] == pytest.approx(together.evidence[k], rel=1e-12)
        assert alone.alpha[0] == pytest.approx(together.alpha[k], rel=1e-9)


def test_target_orthogonal_to_features_reaches_the_alpha_infinity_limit() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(10), np.zeros(10)]
    basis = rng.normal(size=(20, 5))
    features = basis - np.outer(y, y @ basis) / (y @ y)  # every column orthogonal to y
    fit = logme_fit(features, y)
    n = 20
    limit = n / 2 * np.log(n / (y @ y)) - n / 2 * np.log(2 * np.pi) - n / 2  # w = 0, beta = n / ||y||^2
    assert fit.converged and np.all(np.isfinite(fit.evidence))
    assert fit.alpha[0] > 1e12
    assert fit.evidence[0] == pytest.approx(limit, rel=1e-10)


@pytest.mark.parametrize(("n", "d"), [(200, 16), (30, 64)])
def test_features_that_encode_the_labels_score_higher_than_random_ones(n: int, d: int) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=n)
    random_features = rng.normal(size=(n, d))
    encoding = rng.normal(size=(4, d))[labels] + 0.5 * rng.normal(size=(n, d))
    weaker = rng.normal(size=(4, d))[labels] + 3.0 * rng.normal(size=(n, d))
    assert logme_score(encoding, labels) > logme_score(weaker, labels) > logme_score(random_features, labels)


def test_score_is_invariant_to_permuting_examples() -> None:
    features, labels = _problem(40, 7, None, encoded=True, seed=5)
    order = np.random.default_rng(0).permutation(40)
    assert logme_score(features[order], labels[order]) == pytest.approx(logme_score(features, labels), rel=1e-10)


@pytest.mark.parametrize(
    ("features", "labels", "num_classes", "message"),
    [
        (np.ones((4, 3)), np.array([0, 1, 0]), None, "one label per row"),
        (np.ones(4), np.array([0, 1, 0, 1]), None, "2-D array"),
        (np.ones((4, 3)), np.array([1, 1, 1, 1]), None, "fewer than 2 distinct classes"),
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 1, 0]), None, "NaN or infinity"),
        (np.array([[1.0, np.inf], [0.0, 1.0], [1.0, 1.0]]), np.array([0, 1, 0]), None, "NaN or infinity"),
        (np.ones((3, 2)), np.array([0.0, 1.0, 0.0]), None, "integer class ids"),
        (np.ones((3, 2)), np.array([0, -1, 0]), None, "non-negative"),
        (np.ones((3, 2)), np.array([0, 1, 2]), 2, "num_classes is 2"),
        (np.zeros((3, 2)), np.array([0, 1, 0]), None, "all zero"),
    ],
)
def test_bad_input_raises_a_clear_value_error(
    features: np.ndarray, labels: np.ndarray, num_classes: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        logme_score(features, labels, num_classes)


def test_hitting_the_iteration_cap_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    features, labels = _problem(40, 7, None, encoded=False, seed=0)
    monkeypatch.setattr(logme, "_MAX_ITER", 2)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        logme_score(features, labels)
