"""Bootstrap CI and Wilcoxon test on paired scores."""

from __future__ import annotations

import numpy as np
import pytest

from srgan_med.stats import compare_paired


def test_a_clear_gain_is_detected_and_the_interval_is_reproducible():
    rng = np.random.default_rng(1)
    baseline = rng.normal(30, 2, 40)
    method = baseline + 0.8 + rng.normal(0, 0.3, 40)
    first = compare_paired(method, baseline, seed=3)
    assert first == compare_paired(method, baseline, seed=3)
    assert first.ci_low < first.mean_gain < first.ci_high
    assert 0.6 < first.ci_low and first.ci_high < 1.0
    assert first.wilcoxon_p < 1e-6 and first.n == 40


def test_no_gain():
    rng = np.random.default_rng(2)
    baseline = rng.normal(30, 2, 30)
    result = compare_paired(baseline + rng.normal(0, 0.5, 30), baseline)
    assert result.ci_low < 0 < result.ci_high and result.wilcoxon_p > 0.01


def test_baseline_against_itself_is_exactly_zero():
    scores = np.array([30.0, 31.0, 29.5])
    result = compare_paired(scores, scores)
    assert (result.mean_gain, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
    assert np.isnan(result.wilcoxon_p)


def test_bad_input():
    with pytest.raises(ValueError, match="equal-length"):
        compare_paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        compare_paired([np.inf, 2.0], [1.0, 1.0])


def test_one_pair_has_no_interval():
    """One volume gave '[-2.734, -2.734]', a bootstrap interval of zero width, read as certainty."""
    result = compare_paired([31.0], [33.734])
    assert result.n == 1 and result.mean_gain == pytest.approx(-2.734)
    assert np.isnan(result.ci_low) and np.isnan(result.ci_high) and np.isnan(result.wilcoxon_p)
