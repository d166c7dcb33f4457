"""Power-law fits (mmf/experiments/fit.py) on synthetic data whose exponents are known."""
import numpy as np
import pytest

from mmf.experiments.fit import crossing_distribution, crossings, fit_power_law, residual_runs

C = np.geomspace(1e12, 1e15, 12)


def test_saturating_form_recovers_known_parameters_exactly_without_noise():
    a, b, c = 40.0, 0.12, 1.3
    L = a * C ** -b + c
    fit = fit_power_law(C, L, "saturating")
    assert abs(fit.b - b) < 1e-6 and abs(fit.c - c) < 1e-6 and abs(fit.a / a - 1) < 1e-5
    assert np.max(np.abs(fit.residuals)) < 1e-9


def test_power_form_recovers_known_parameters_exactly_without_noise():
    L = 25.0 * C ** -0.07
    fit = fit_power_law(C, L, "power")
    assert abs(fit.b - 0.07) < 1e-10 and abs(fit.a / 25.0 - 1) < 1e-9 and fit.c == 0.0


def test_noisy_seeds_recover_exponent_within_tolerance_and_bootstrap_interval_covers_it():
    rng = np.random.default_rng(1)
    a, b, c = 60.0, 0.15, 1.5
    sizes = np.geomspace(1e12, 1e15, 6)
    Cs = np.repeat(sizes, 2)                                         # two seeds per size
    L = a * Cs ** -b + c + rng.normal(0, 0.004, Cs.shape)
    fit = fit_power_law(Cs, L, "saturating", groups=np.repeat(np.arange(6), 2), bootstrap=200, seed=0)
    assert abs(fit.b - b) / b < 0.25
    lo, hi = fit.interval("b", (2.5, 97.5))
    assert lo < b < hi
    assert len(fit.bootstrap["b"]) > 150                             # few replicates skipped
    band_lo, band_hi = fit.band(sizes)
    assert np.all(band_lo <= fit(sizes) + 1e-3) and np.all(fit(sizes) - 1e-3 <= band_hi)
    assert residual_runs(fit.residuals[np.argsort(Cs, kind="stable")]) >= 3


def test_wrong_form_shows_in_the_residuals():
    """Negative control: a pure power law fitted to saturating data leaves structured residuals (few
    long sign runs, far above the noise), while the right form leaves noise-like ones."""
    rng = np.random.default_rng(2)
    L = 2000.0 * C ** -0.25 + 2.0 + rng.normal(0, 0.002, C.shape)
    right, wrong = fit_power_law(C, L, "saturating"), fit_power_law(C, L, "power")
    assert residual_runs(wrong.residuals) <= 3
    assert np.sqrt(np.mean(wrong.residuals ** 2)) > 5 * 0.002
    assert residual_runs(right.residuals) >= 4
    assert np.sqrt(np.mean(right.residuals ** 2)) < 2 * 0.002


def test_crossing_of_two_known_curves_is_found_inside_and_not_outside_the_range():
    f = lambda x: 100.0 * np.asarray(x) ** -0.2 + 1.0              # steeper
    g = lambda x: 20.0 * np.asarray(x) ** -0.1 + 1.0
    # f == g where 5 = x^0.1 -> x = 5^10 ~ 9.77e6
    xs = crossings(f, g, 1e3, 1e12)
    assert len(xs) == 1 and abs(xs[0] / 5.0 ** 10 - 1) < 1e-6
    assert crossings(f, g, 1e8, 1e12) == []


def test_crossing_distribution_over_bootstrap_replicates():
    rng = np.random.default_rng(3)
    Cs = np.repeat(np.geomspace(1e3, 1e6, 5), 2)
    f1 = fit_power_law(Cs, 100 * Cs ** -0.2 + 1 + rng.normal(0, 1e-3, Cs.shape), "saturating",
                       groups=np.repeat(np.arange(5), 2), bootstrap=60)
    f2 = fit_power_law(Cs, 20 * Cs ** -0.1 + 1 + rng.normal(0, 1e-3, Cs.shape), "saturating",
                       groups=np.repeat(np.arange(5), 2), bootstrap=60)
    d = crossing_distribution(f1, f2, 1e3, 1e12)
    assert d["fraction"] > 0.8 and d["p16"] < 5.0 ** 10 < d["p84"]


def test_bad_input_is_refused_with_a_message():
    with pytest.raises(ValueError, match="form"):
        fit_power_law(C, C ** -0.1, "exponential")
    with pytest.raises(ValueError, match="distinct compute"):
        fit_power_law([1.0, 1.0, 2.0], [3.0, 3.0, 2.0], "saturating")
    with pytest.raises(ValueError, match="finite and positive"):
        fit_power_law([1.0, 2.0, np.nan], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="bootstrap"):
        fit_power_law(C, C ** -0.1, "power").interval("b")
