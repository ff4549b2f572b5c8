"""Searching beta_rate for a target mean bpp (DC-VIC stage 2, step 2).

The mean estimated bpp of a validation set, as a function of ``beta_rate`` for a fixed
``beta_vq``, decreases as ``beta_rate`` grows (a trained model; an untrained one need not be
monotone). Two searches over ``[0, max_beta_rate]`` are given:

* :func:`bisection_search`: the published procedure, one beta per pass over the set, one
  target at a time (kept for comparison).
* :func:`batched_search`: K betas per pass (the batch is repeated with K betas), the first
  pass a K-point grid that brackets every target of the curve at once, then per target a
  regula-falsi (linear interpolation) guess inside its bracket flanked by points at +-h, with
  h the beta step worth ``error_delta`` of bpp at the bracket's slope, so the next bracket is
  about 2*error_delta high. The bracket midpoint is added as a bisection safeguard; a target
  still open after that round gets the rest of its share of the K points spread evenly over
  its bracket (grid refinement), which shrinks the bracket whatever the curve's shape.
  A target outside the range of bpp seen on the grid (for a decreasing curve: outside
  ``[bpp(max_beta_rate), bpp(0)]``, with ``error_delta`` slack) is reported unreachable after
  that first pass. On a non-monotone curve (an untrained model) the first crossing is used.

Both work on a :class:`BppCurve`, a memoised ``beta_rate -> mean bpp`` with counters:

* ``passes``: calls of the rate function, i.e. passes over the validation set;
* ``evaluations``: (image, beta_rate) forward evaluations = sum over passes of
  ``num_images * number of new betas in that pass``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

#: a rate function: beta_rates -> mean bpp of each (one pass over the set)
RateFunction = Callable[[Sequence[float]], Sequence[float]]

CONVERGED, MAX_RUNS = "converged", "max_runs"
#: within tolerance, but the evaluated rate rises with beta_rate somewhere: other beta_rates may
#: give the same rate, so the answer is one of several (a model that has not learned rate control)
NON_MONOTONE = "non_monotone"
UNREACHABLE_HIGH, UNREACHABLE_LOW = "unreachable_high", "unreachable_low"


def _key(beta: float) -> float:
    """Memo key: beta_rate rounded to 1e-6 (finer steps change nothing measurable)."""
    return round(float(beta), 6)


class BppCurve:
    """Memoised mean bpp of one beta_vq as a function of beta_rate.

    ``fn(betas)`` must return the mean bpp of each beta in one pass over ``num_images`` images.
    Betas already known are never evaluated again; ``points`` keeps ``(pass, beta, bpp)`` in
    evaluation order.
    """

    def __init__(self, fn: RateFunction, num_images: int = 1):
        self.fn, self.num_images = fn, num_images
        self.cache: Dict[float, float] = {}
        self.points: List[Tuple[int, float, float]] = []
        self.passes = 0
        self.evaluations = 0

    def __call__(self, betas: Sequence[float]) -> List[float]:
        new = sorted({_key(b) for b in betas} - set(self.cache))
        if new:
            values = [float(v) for v in self.fn(new)]
            if len(values) != len(new):
                raise ValueError(f"rate function returned {len(values)} values for {len(new)} betas")
            self.passes += 1
            self.evaluations += self.num_images * len(new)
            for b, v in zip(new, values):
                self.cache[b] = v
                self.points.append((self.passes, b, v))
        return [self.cache[_key(b)] for b in betas]

    def sorted_points(self) -> List[Tuple[float, float]]:
        """Known (beta, bpp) pairs by increasing beta."""
        return sorted(self.cache.items())


@dataclasses.dataclass
class SearchResult:
    """Outcome for one target: the answer, its status and what the search evaluated."""

    target: float
    beta_rate: float
    avg_bpp: float
    status: str
    rows: List[Tuple[int, float, float]]   # (pass, beta_rate, bpp) evaluated for this target
    passes: int = 0                        # passes over the set spent until resolved
    evaluations: int = 0                   # (image, beta) evaluations spent until resolved

    @property
    def diff(self) -> float:
        return self.avg_bpp - self.target

    def message(self, max_beta: float) -> str:
        """One human-readable line about the outcome."""
        head = f"target {self.target:.4f} bpp"
        at = f"beta_rate={self.beta_rate:.4g} ({self.avg_bpp:.4f} bpp)"
        if self.status == UNREACHABLE_HIGH:
            return (f"{head} is UNREACHABLE: above the rate at {at}, the highest this beta_vq "
                    "gives; that point is reported")
        if self.status == UNREACHABLE_LOW:
            return (f"{head} is UNREACHABLE: below the rate at {at}, the lowest this beta_vq "
                    f"gives up to max_beta_rate={max_beta:g}; raise --max_beta_rate or use a "
                    "larger beta_vq")
        if self.status == NON_MONOTONE:
            return (f"{head}: beta_rate {self.beta_rate:.4f} gives {self.avg_bpp:.4f} (diff {self.diff:+.4f}), "
                    "but the rate is NOT MONOTONE in beta_rate over the evaluated points, so other beta_rates "
                    "may give it too: the model does not control its rate by beta_rate yet")
        if self.status == MAX_RUNS:
            return (f"{head} NOT reached within the run limit: best beta_rate {self.beta_rate:.4f} "
                    f"gives {self.avg_bpp:.4f} (diff {self.diff:+.4f})")
        return f"{head}: beta_rate {self.beta_rate:.4f} gives {self.avg_bpp:.4f} (diff {self.diff:+.4f})"


def _best(points: Sequence[Tuple[float, float]], target: float) -> Tuple[float, float]:
    """The (beta, bpp) closest to the target in bpp (ties: smaller beta)."""
    return min(points, key=lambda p: (abs(p[1] - target), p[0]))


# -- plain bisection (the published procedure) -------------------------------------------------
def bisection_search(curve: BppCurve, target: float, max_beta: float, error_delta: float = 1e-3,
                     max_runs: int = 10) -> SearchResult:
    """Bisect beta_rate in [0, max_beta]: one midpoint per pass, stop within ``error_delta``.

    The endpoints are never evaluated (as published), so an unreachable target only shows as
    a failure to converge whose bracket collapsed onto an endpoint.
    """
    lo, hi = 0.0, float(max_beta)
    start_passes, start_evals = curve.passes, curve.evaluations
    tried: List[Tuple[float, float]] = []
    status = MAX_RUNS
    for _ in range(max_runs):
        beta = (lo + hi) / 2
        bpp = curve([beta])[0]
        tried.append((beta, bpp))
        if abs(bpp - target) <= error_delta:
            status = CONVERGED
            break
        if bpp > target:
            lo = beta   # too many bits: a larger beta_rate lowers the rate
        else:
            hi = beta
    beta, bpp = tried[-1] if status == CONVERGED else _best(tried, target)
    if status == MAX_RUNS and lo == 0.0:      # every midpoint gave too few bits
        status = UNREACHABLE_HIGH
    elif status == MAX_RUNS and hi == float(max_beta):  # every midpoint gave too many bits
        status = UNREACHABLE_LOW
    if status == CONVERGED and rises(sorted(tried), error_delta):
        status = NON_MONOTONE
    rows = [(p, b, v) for p, b, v in curve.points if p > start_passes]
    return SearchResult(target, beta, bpp, status, rows, curve.passes - start_passes,
                        curve.evaluations - start_evals)


# -- batched bracket + interpolation ----------------------------------------------------------
def find_bracket(points: Sequence[Tuple[float, float]], target: float, min_width: float = 0.0
                 ) -> Optional[Tuple[Tuple[float, float], Tuple[float, float]]]:
    """Neighbouring known points ``(a, fa), (b, fb)``, a < b, with the target between fa and fb.

    ``points`` sorted by beta. Several crossings (a non-monotone curve): the first one at least
    ``min_width`` wide (a narrower one is a jump of the curve that no beta_rate resolves).
    """
    for (a, fa), (b, fb) in zip(points, points[1:]):
        if min(fa, fb) <= target <= max(fa, fb) and b - a >= min_width:
            return (a, fa), (b, fb)
    return None


def propose(bracket, target: float, error_delta: float, budget: int, fill: bool = False) -> List[float]:
    """Up to ``budget`` betas inside the open bracket.

    The interpolated guess, guess -+ h (h = beta step worth ``error_delta`` at the bracket's
    slope), the midpoint; with ``fill`` (the target survived a round already: the curve is not
    linear there) the rest of the budget goes to evenly spaced points of the bracket.
    """
    (a, fa), (b, fb) = bracket
    width = b - a
    if fa == fb:
        guess, h = (a + b) / 2, width / 4
    else:
        guess = a + (fa - target) / (fa - fb) * width
        h = error_delta * width / abs(fa - fb)
    margin = 0.01 * width
    guess = min(max(guess, a + margin), b - margin)
    cands = [guess, guess - h, guess + h]
    n_fill = max(budget - 3, 1) if fill else 1
    cands += [a + width * (j + 1) / (n_fill + 1) for j in range(n_fill)]
    out: List[float] = []
    for c in cands:
        if a < c < b and _key(c) not in {_key(o) for o in out}:
            out.append(c)
        if len(out) == budget:
            break
    return out


def _unreachable(points: Sequence[Tuple[float, float]], target: float, error_delta: float
                 ) -> Optional[str]:
    """Unreachable status of a target outside the range of the known bpp, else None."""
    values = [v for _, v in points]
    if target > max(values) + error_delta:
        return UNREACHABLE_HIGH
    if target < min(values) - error_delta:
        return UNREACHABLE_LOW
    return None


def rises(points: Sequence[Tuple[float, float]], tolerance: float) -> List[Tuple[float, float]]:
    """The (beta_a, beta_b) of consecutive points (sorted by beta) whose bpp rises by more than ``tolerance``."""
    return [(a, b) for (a, fa), (b, fb) in zip(points, points[1:]) if fb > fa + tolerance]


def _warn_if_not_monotone(points: Sequence[Tuple[float, float]]) -> None:
    bad = rises(points, 0.0)
    if bad:
        log.warning("bpp rises with beta_rate between %s: the curve is not monotone (untrained "
                    "model?); the first crossing of each target is used", bad[:3])


def _resolve(curve: BppCurve, target: float, status: str) -> SearchResult:
    """The result of a target from the points of the curve known now.

    Unreachable: the point of highest (too high a target) or lowest bpp; for a decreasing
    curve beta_rate 0 or max_beta_rate.
    """
    pts = curve.sorted_points()
    if status == UNREACHABLE_HIGH:
        beta, bpp = max(pts, key=lambda p: (p[1], -p[0]))
    elif status == UNREACHABLE_LOW:
        beta, bpp = min(pts, key=lambda p: (p[1], -p[0]))
    else:
        beta, bpp = _best(pts, target)
    return SearchResult(target, beta, bpp, status, list(curve.points), curve.passes, curve.evaluations)


def batched_search(curve: BppCurve, targets: Sequence[float], max_beta: float,
                   error_delta: float = 1e-3, max_runs: int = 10, k: int = 8) -> List[SearchResult]:
    """Find beta_rate for all ``targets`` of one curve with K betas per pass (see module doc).

    ``max_runs`` bounds the passes spent by this call. Each target is resolved as soon as a known
    point lies within ``error_delta``; its result records the passes/evaluations spent by then.
    """
    if k < 2:
        raise ValueError("the batched search needs k >= 2 betas per pass (use bisection for 1)")
    start = curve.passes
    grid = [max_beta * i / (k - 1) for i in range(k)]
    curve(grid)
    _warn_if_not_monotone(curve.sorted_points())
    results: Dict[int, SearchResult] = {}
    rounds: Dict[int, int] = {}  # interpolation rounds spent per target
    for i, t in enumerate(targets):
        status = _unreachable(curve.sorted_points(), t, error_delta)
        if status is not None:
            results[i] = _resolve(curve, t, status)
    while True:
        pts = curve.sorted_points()
        open_targets = []
        for i, t in enumerate(targets):
            if i in results:
                continue
            if abs(_best(pts, t)[1] - t) <= error_delta:
                results[i] = _resolve(curve, t, CONVERGED)
            else:
                open_targets.append(i)
        if not open_targets or curve.passes - start >= max_runs:
            break
        budget = max(1, k // len(open_targets))
        cands: List[float] = []
        for i in open_targets:
            bracket = find_bracket(pts, targets[i], min_width=1e-5 * max_beta)
            if bracket is None:  # only jumps of the curve are left around the target
                results[i] = _resolve(curve, targets[i], MAX_RUNS)
                continue
            cands += propose(bracket, targets[i], error_delta, budget, fill=rounds.get(i, 0) > 1)
            rounds[i] = rounds.get(i, 0) + 1
        if not cands:
            break
        curve(cands)
    for i in range(len(targets)):
        if i not in results:
            results[i] = _resolve(curve, targets[i], MAX_RUNS)
    if rises(curve.sorted_points(), error_delta):
        for r in results.values():
            if r.status == CONVERGED:
                r.status = NON_MONOTONE
    return [results[i] for i in range(len(targets))]
