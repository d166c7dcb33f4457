"""Power laws of loss against compute, fitted with NumPy only, with bootstrap uncertainty.

Two forms (Kaplan et al. 2020; Hoffmann et al. 2022 use the saturating one):

    "saturating"  L(C) = a * C^(-b) + c      (c: the loss no amount of compute removes)
    "power"       L(C) = a * C^(-b)          (a straight line in log-log)

Compute is scaled by C0 (the geometric mean of the measured C) before fitting, so the numbers stay
near 1; `a` is reported in the original units (a * C0^b). The power form is a linear least-squares
fit of log L on log C. The saturating form is a least-squares fit of L itself: for each c on a grid
in [0, min(L)) the other two follow from the linear fit of log(L - c) on log C; the best grid point then
starts a Levenberg-Marquardt refinement of (log a, b, c) with the analytic Jacobian. Three
parameters, so at least three distinct compute values.

Uncertainty: a bootstrap over sizes and seeds. Points are grouped (one group per model size); each
replicate draws as many groups as there are, with replacement, then one point (one seed) from each
drawn group, and refits. Percentiles of the replicates give intervals for b, c, the curve (a band)
and for where two curves cross.

`residual_runs` is the check that a form is wrong: the residuals of a right form change sign like
noise (about n/2 runs of one sign), a wrong form leaves long runs (a U or an S).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FORMS = ("saturating", "power")


@dataclass
class PowerLawFit:
    form: str                 # "saturating" or "power"
    a: float                  # L(C) = a * C^(-b) (+ c), C in the caller's units (FLOPs)
    b: float                  # the exponent: how steeply loss falls with compute
    c: float                  # the floor (0 for the power form)
    residuals: np.ndarray     # L - L_fit at the fitted points (in the order given)
    bootstrap: dict = field(default_factory=dict)   # "b", "c", "a": arrays over replicates (if requested)

    def __call__(self, C):
        C = np.asarray(C, dtype=np.float64)
        return self.a * C ** (-self.b) + self.c

    def interval(self, name: str, q=(16, 84)) -> tuple[float, float]:
        """Percentile interval of a parameter over the bootstrap replicates (default: the central 68%)."""
        if name not in self.bootstrap or not len(self.bootstrap[name]):
            raise ValueError(f"no bootstrap replicates of {name!r}; fit with bootstrap=N > 0")
        lo, hi = np.percentile(self.bootstrap[name], q)
        return float(lo), float(hi)

    def band(self, C, q=(16, 84)) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band of the fitted curve at C over the bootstrap replicates."""
        a, b, c = (np.asarray(self.bootstrap[k]) for k in ("a", "b", "c"))
        C = np.asarray(C, dtype=np.float64)
        curves = a[:, None] * C[None, :] ** (-b[:, None]) + c[:, None]
        return np.percentile(curves, q[0], axis=0), np.percentile(curves, q[1], axis=0)


def _check(C, L):
    C, L = np.asarray(C, dtype=np.float64), np.asarray(L, dtype=np.float64)
    if C.shape != L.shape or C.ndim != 1:
        raise ValueError(f"compute and loss must be 1-D arrays of one length, got shapes {C.shape}, {L.shape}")
    if not (np.all(np.isfinite(C)) and np.all(np.isfinite(L))) or np.any(C <= 0) or np.any(L <= 0):
        raise ValueError("compute and loss must be finite and positive (drop diverged runs before fitting)")
    return C, L


def _linear_loglog(x, y):
    """Least squares y = p0 + p1 x; returns (p0, p1)."""
    A = np.stack([np.ones_like(x), x], axis=1)
    (p0, p1), *_ = np.linalg.lstsq(A, y, rcond=None)
    return p0, p1


def _fit_saturating(x, L, grid_points=200, iterations=60):
    """x = log(C / C0). Returns (log a, b, c) minimizing sum (L - a e^{-b x} - c)^2 with 0 <= c < min(L)
    (a loss cannot fall below 0)."""
    Lmin = L.min()
    cs = np.concatenate([[0.0], Lmin * (1 - 1e-6) * (1 - np.geomspace(1, 1e-4, grid_points))])
    Y = np.log(L[None, :] - cs[:, None])                            # (grid, n): log(L - c) per candidate c
    xm, Ym = x.mean(), Y.mean(axis=1, keepdims=True)
    slope = ((x - xm)[None, :] * (Y - Ym)).sum(axis=1) / ((x - xm) ** 2).sum()   # closed-form line per c
    icept = Ym[:, 0] - slope * xm
    R = L[None, :] - (np.exp(icept[:, None] + slope[:, None] * x[None, :]) + cs[:, None])
    sses = (R ** 2).sum(axis=1)
    k = int(np.argmin(sses))
    sse, theta = float(sses[k]), np.array([icept[k], -slope[k], cs[k]])
    lam = 1e-3
    for _ in range(iterations):                                    # Levenberg-Marquardt on (log a, b, c)
        la, b, c = theta
        e = np.exp(la - b * x)
        r = L - (e + c)
        J = np.stack([e, -x * e, np.ones_like(x)], axis=1)          # d(model)/d(log a, b, c)
        H, g = J.T @ J, J.T @ r
        step = np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), g)
        trial = theta + step
        if not 0 <= trial[2] < Lmin:                                # a floor in [0, every loss)
            lam *= 10
            continue
        rt = L - (np.exp(trial[0] - trial[1] * x) + trial[2])
        if rt @ rt < sse:
            theta, sse, lam = trial, float(rt @ rt), lam / 3
            if np.max(np.abs(step)) < 1e-12:
                break
        else:
            lam *= 10
            if lam > 1e12:
                break
    return theta


def _fit_once(C, L, form, C0):
    x = np.log(C / C0)
    if form == "power":
        p0, p1 = _linear_loglog(x, np.log(L))
        la, b, c = p0, -p1, 0.0
    else:
        la, b, c = _fit_saturating(x, L)
    a = float(np.exp(la) * C0 ** b)                                  # back to C in the caller's units
    return a, float(b), float(c)


def fit_power_law(C, L, form: str = "saturating", groups=None, bootstrap: int = 0,
                  seed: int = 0) -> PowerLawFit:
    """Fit L(C) (module docstring). groups: one label per point (e.g. the model size), for the
    bootstrap over sizes and seeds; None = every point its own group. bootstrap: replicates (0 = none)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    C, L = _check(C, L)
    need = 3 if form == "saturating" else 2
    if len(np.unique(C)) < need:
        raise ValueError(f"the {form} form has {need} parameters: need at least {need} distinct compute "
                         f"values, got {len(np.unique(C))}")
    C0 = float(np.exp(np.mean(np.log(C))))
    a, b, c = _fit_once(C, L, form, C0)
    fit = PowerLawFit(form, a, b, c, L - (a * C ** (-b) + c))
    if bootstrap:
        groups = np.arange(len(C)) if groups is None else np.asarray(groups)
        if groups.shape != C.shape:
            raise ValueError(f"groups must give one label per point ({len(C)}), got shape {groups.shape}")
        labels = np.unique(groups)
        members = [np.flatnonzero(groups == g) for g in labels]
        rng = np.random.default_rng(seed)
        reps = {"a": [], "b": [], "c": []}
        for _ in range(bootstrap):
            drawn = rng.integers(0, len(labels), len(labels))
            idx = np.array([rng.choice(members[g]) for g in drawn])
            if len(np.unique(C[idx])) < need:                        # too few distinct sizes drawn: skip
                continue
            ra, rb, rc = _fit_once(C[idx], L[idx], form, C0)
            reps["a"].append(ra), reps["b"].append(rb), reps["c"].append(rc)
        fit.bootstrap = {k: np.array(v) for k, v in reps.items()}
    return fit


def residual_runs(residuals) -> int:
    """Number of runs of one sign in the residuals, in the order of increasing compute given.
    Noise gives about n/2; a wrong functional form gives a few long runs."""
    s = np.sign(np.asarray(residuals, dtype=np.float64))
    s = s[s != 0]
    return int(1 + np.count_nonzero(s[1:] != s[:-1])) if len(s) else 0


def crossings(f, g, C_lo: float, C_hi: float, points: int = 2000) -> list[float]:
    """Compute values in [C_lo, C_hi] where the curves f and g (callables of C) cross (sign changes of
    f - g on a log grid, refined by bisection in log C)."""
    if not 0 < C_lo < C_hi:
        raise ValueError(f"need 0 < C_lo < C_hi, got {C_lo}, {C_hi}")
    logC = np.linspace(np.log(C_lo), np.log(C_hi), points)
    d = f(np.exp(logC)) - g(np.exp(logC))
    out = []
    for i in np.flatnonzero(np.sign(d[1:]) * np.sign(d[:-1]) < 0):
        lo, hi = logC[i], logC[i + 1]
        for _ in range(60):
            mid = (lo + hi) / 2
            same = np.sign(f(np.exp(mid)) - g(np.exp(mid))) == np.sign(d[i])
            lo, hi = (mid, hi) if same else (lo, mid)
        out.append(float(np.exp((lo + hi) / 2)))
    return out


def crossing_distribution(fit1: PowerLawFit, fit2: PowerLawFit, C_lo: float, C_hi: float) -> dict:
    """Where fit1 and fit2 cross in [C_lo, C_hi], over paired bootstrap replicates (replicate i of each):
    the fraction of replicates with a crossing and the 16/50/84th percentiles of the first one."""
    n = min(len(fit1.bootstrap.get("b", [])), len(fit2.bootstrap.get("b", [])))
    if n == 0:
        raise ValueError("both fits need bootstrap replicates (fit with bootstrap=N > 0)")
    first = []
    for i in range(n):
        f = _curve(fit1, i)
        g = _curve(fit2, i)
        xs = crossings(f, g, C_lo, C_hi, points=400)
        if xs:
            first.append(xs[0])
    out = {"replicates": n, "fraction": len(first) / n}
    if first:
        out.update(zip(("p16", "p50", "p84"), (float(v) for v in np.percentile(first, (16, 50, 84)))))
    return out


def _curve(fit: PowerLawFit, i: int):
    a, b, c = (float(fit.bootstrap[k][i]) for k in ("a", "b", "c"))
    return lambda C: a * np.asarray(C, dtype=np.float64) ** (-b) + c
