"""Paired statistics for method comparisons: bootstrap confidence intervals and Wilcoxon tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    """Gain of a method over a baseline on paired samples (volumes or slices)."""

    n: int
    mean_gain: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float  # two-sided; NaN when every difference is zero or n < 2
    # ci_low/ci_high: NaN for n < 2 (one pair says nothing about the spread)


def compare_paired(
    method, baseline, *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> PairedComparison:
    """Mean of ``method - baseline`` with a percentile bootstrap CI and a Wilcoxon signed-rank test.

    Args:
        method: per-sample scores of the method (higher is better, e.g. PSNR).
        baseline: per-sample scores of the baseline, same samples in the same order.
        confidence: two-sided confidence level of the interval.
        resamples: bootstrap resamples (seeded: the interval is reproducible).
        seed: seed of the bootstrap generator.

    Raises:
        ValueError: different lengths, no samples, or non-finite differences (e.g. infinite PSNR).
    """
    from scipy.stats import bootstrap, wilcoxon

    method = np.asarray(method, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    if method.shape != baseline.shape or method.ndim != 1 or method.size == 0:
        raise ValueError(f"need two equal-length 1-D score lists, got {method.shape} and {baseline.shape}")
    gain = method - baseline
    if not np.all(np.isfinite(gain)):
        raise ValueError("gains must be finite (an infinite PSNR has no mean gain)")
    if gain.size < 2:  # no spread to resample: an interval [g, g] would claim certainty
        low = high = float("nan")
    elif np.all(gain == gain[0]):
        low = high = float(gain.mean())
    else:
        result = bootstrap(
            (gain,),
            np.mean,
            confidence_level=confidence,
            n_resamples=resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    p_value = float("nan")
    if gain.size >= 2 and np.any(gain != 0):
        p_value = float(wilcoxon(method, baseline, alternative="two-sided").pvalue)
    return PairedComparison(int(gain.size), float(gain.mean()), low, high, p_value)
