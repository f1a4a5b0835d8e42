"""Head weights learned by a pairwise logistic fit (``pyterrier_headrank.head_weights``)."""
import numpy as np
import pytest

from pyterrier_headrank.head_weights import fit_pairwise_logistic, learn_head_weights, pair_differences


def _lists(seed=0, lists=40, n=10, heads=6, informative=3):
    """Masses ``[heads, n]`` per list where only head ``informative`` rises with the grade; the others are noise."""
    rng = np.random.default_rng(seed)
    masses, grades = [], []
    for _ in range(lists):
        grade = rng.integers(0, 3, n)
        mass = rng.random((heads, n))
        mass[informative] = 0.3 * grade + 0.2 * rng.random(n)
        masses.append(mass)
        grades.append(grade)
    return masses, grades


def test_pairs_are_the_better_candidate_minus_the_worse_one():
    mass = np.array([[1.0, 5.0, 2.0], [0.0, 1.0, 3.0]])  # 2 heads, 3 candidates
    got = pair_differences([mass], [np.array([0, 2, 1])])
    want = {(4.0, 1.0), (3.0, -2.0), (1.0, 3.0)}  # (1 over 0), (1 over 2), (2 over 0)
    assert {tuple(row) for row in got} == want


def test_lists_with_one_grade_give_no_pairs_and_a_clear_error():
    with pytest.raises(ValueError, match="at least two relevance grades"):
        pair_differences([np.ones((2, 3))], [np.zeros(3, int)])


def test_the_informative_head_gets_the_largest_positive_weight_and_ranks_held_out_lists():
    masses, grades = _lists()
    heads = learn_head_weights(masses, grades, num_heads=3, max_layer=1, c=1.0)
    assert heads.heads == ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2))  # every head of layers 0-1, layer-major
    weights = np.array(heads.weights)
    standardised = weights * pair_differences(masses, grades).std(axis=0)
    assert int(np.argmax(np.abs(standardised))) == 3 and standardised[3] == pytest.approx(1.0)
    test_masses, test_grades = _lists(seed=1)
    for mass, grade in zip(test_masses, test_grades):
        scores = weights @ mass
        assert grade[np.argmax(scores)] == grade.max()


def test_only_the_allowed_layers_are_weighted():
    masses, grades = _lists(heads=6, informative=1)
    heads = learn_head_weights(masses, grades, num_heads=3, max_layer=0, c=1.0)
    assert heads.heads == ((0, 0), (0, 1), (0, 2)) and heads.deepest_layer == 0
    with pytest.raises(ValueError, match="layers 0-2 needs 9 heads"):
        learn_head_weights(masses, grades, num_heads=3, max_layer=2)


def test_the_optimiser_finds_the_same_weights_as_scikit_learn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    masses, grades = _lists(seed=2)
    d = pair_differences(masses, grades)
    c = 0.05
    ours = fit_pairwise_logistic(d, c)
    # c * sum softplus(-w.d) + |w|^2/2 is scikit-learn's objective on (d, 1) and (-d, 0) with C = c / 2
    theirs = linear_model.LogisticRegression(C=c / 2, fit_intercept=False, tol=1e-10, max_iter=10000).fit(
        np.vstack([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))]).coef_[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_pair_weights_match_scikit_learns_sample_weights():
    linear_model = pytest.importorskip("sklearn.linear_model")
    masses, grades = _lists(seed=3)
    d = pair_differences(masses, grades)
    a = np.random.default_rng(0).uniform(0.1, 3.0, len(d))
    c = 0.05
    ours = fit_pairwise_logistic(d, c, pair_weights=a)
    theirs = linear_model.LogisticRegression(C=c / 2, fit_intercept=False, tol=1e-10, max_iter=10000).fit(
        np.vstack([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))], sample_weight=np.r_[a, a]).coef_[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert not np.allclose(ours, fit_pairwise_logistic(d, c), rtol=1e-3)  # the weights change the fit


@pytest.mark.parametrize("bad", [np.ones(3), -np.ones(1), np.full(1, np.nan)])
def test_pair_weights_of_the_wrong_length_or_sign_are_refused(bad):
    masses, grades = _lists(lists=3)
    d = pair_differences(masses, grades)
    bad = np.resize(bad, len(d)) if len(bad) == 1 else bad
    with pytest.raises(ValueError, match="pair_weights must be"):
        fit_pairwise_logistic(d, 0.1, pair_weights=bad)


@pytest.mark.parametrize("c", [0.0, -1.0, float("nan"), float("inf")])
def test_a_strength_that_is_not_a_positive_number_is_refused(c):
    masses, grades = _lists(lists=3)
    with pytest.raises(ValueError, match="HeadRank: the head-weight strength"):
        learn_head_weights(masses, grades, num_heads=3, max_layer=1, c=c)
