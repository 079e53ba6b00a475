"""Statistics across seeds for sweep reports, after Agarwal et al. (2021), "Deep RL at the Edge of
the Statistical Precipice": per configuration the interquartile mean (IQM) of final returns,
the probability of improvement over a baseline, and score distributions (performance profiles),
each with a stratified-bootstrap percentile confidence interval computed by ``rliable``.

The statistics are per configuration on raw returns: all seeds of one configuration run one env,
so their returns share a scale. A comparison or a profile across envs would need per-env
reference scores (rliable's Atari results divide by random and human scores); we have none, and
min-max over the sweep's own runs would make a configuration's number depend on which other
configurations are in the sweep. So a comparison across envs is refused and the performance
profile gets one panel per env.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

# Below this many seeds the bootstrap interval is not shown. In 1000 simulated sweeps (normal and
# bimodal returns), the nominal 95% percentile interval of the IQM covered the true IQM in 47% of
# them with 2 seeds, 68-76% with 3, 79-86% with 4 and 81-90% with 5: with fewer than 5 seeds it
# says little about where the IQM lies (docs/sweeps.md).
MIN_SEEDS_FOR_INTERVAL = 5
CONFIDENCE = 0.95
# 2000 replicates keep 50 in each 2.5% tail; 10 configurations x 5 seeds take well under 2 s.
DEFAULT_BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0  # the same sweep gives the same intervals on every run
PROFILE_POINTS = 101  # thresholds tau per env for the score distributions
# Interquartile mean: the mean of the middle 50% of runs, as rliable's aggregate_iqm.
TRIM_FRACTION = 0.25

REPORT_EXTRA_HINT = "pip install -c constraints.txt -e '.[report]'"


class StatisticsUnavailable(Exception):
    """rliable (the `report` extra) is not installed; ``str()`` is one line with the fix."""


@dataclass(frozen=True)
class Interval:
    point: float
    low: float
    high: float


@dataclass(frozen=True)
class Profile:
    """Score distribution of one configuration: fraction of its runs with return > tau."""

    env: str
    taus: np.ndarray
    fraction: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class SweepStatistics:
    """Per configuration (None where it has no final return): IQM and profile; per compared
    (configuration, baseline) pair of indices: the probability that the first is better."""

    iqm: list[Interval | None]
    improvement: dict[tuple[int, int], Interval]
    profiles: list[Profile | None]
    reps: int


def interquartile_mean(scores: np.ndarray) -> np.ndarray:
    """Per column of ``scores`` (runs x configurations): the mean of the runs left after cutting
    TRIM_FRACTION of them at each end (rliable's aggregate_iqm, scipy's trim_mean, vectorised:
    it runs once per bootstrap replicate)."""
    runs = scores.shape[0]
    cut = int(TRIM_FRACTION * runs)
    return np.sort(scores, axis=0)[cut : runs - cut].mean(axis=0)


def probability_of_improvement(scores: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Per column: P(X > Y) for a run X of ``scores`` and a run Y of ``baseline`` (runs x pairs
    each), ties counting half: the Mann-Whitney U statistic over the number of pairs of runs, as
    rliable's probability_of_improvement."""
    diff = scores[:, None, :] - baseline[None, :, :]
    return np.mean(diff > 0, axis=(0, 1)) + 0.5 * np.mean(diff == 0, axis=(0, 1))


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Per column of ``scores`` (runs x configurations) and row of ``taus`` (configurations x
    thresholds): the fraction of runs whose score is above each threshold."""
    return np.mean(scores[:, :, None] > taus[None, :, :], axis=0)


@contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    # rliable's bootstraps draw their indices from numpy's global generator whatever
    # random_state they are given; seed it for this computation only.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def profile_taus(finals: Sequence[np.ndarray]) -> np.ndarray:
    """PROFILE_POINTS thresholds spanning the returns of one env, a margin on each side."""
    pooled = np.concatenate(finals)
    low, high = float(pooled.min()), float(pooled.max())
    margin = max(0.05 * (high - low), 1.0)
    return np.linspace(low - margin, high + margin, PROFILE_POINTS)


@dataclass(frozen=True)
class _Layout:
    """Where each configuration sits in the bootstrap's input: configurations with the same
    number of seeds share one (runs x configurations) matrix, a column each."""

    matrices: list[list[int]]  # per matrix: its configurations, column by column

    @classmethod
    def of(cls, finals: Sequence[np.ndarray]) -> _Layout:
        by_runs: dict[int, list[int]] = {}
        for config, scores in enumerate(finals):
            if scores.size:
                by_runs.setdefault(scores.size, []).append(config)
        return cls(list(by_runs.values()))

    @property
    def configs(self) -> list[int]:
        return [config for columns in self.matrices for config in columns]

    def samples(self, finals: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.column_stack([finals[c] for c in columns]) for columns in self.matrices]

    def place(self, config: int) -> tuple[int, int]:
        for m, columns in enumerate(self.matrices):
            if config in columns:
                return m, columns.index(config)
        raise KeyError(config)


def compute_statistics(
    finals: Sequence[np.ndarray],
    envs: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    reps: int = DEFAULT_BOOTSTRAP_REPS,
) -> SweepStatistics:
    """``finals[i]``: the final returns of configuration i's seeds (finite, possibly none);
    ``envs[i]``: its env; ``pairs``: (configuration, baseline) indices to compare.

    One stratified bootstrap (rliable's, each configuration a stratum) resamples every
    configuration's seeds independently, with replacement, ``reps`` times; each statistic is
    computed on every replicate, and its interval is the percentile interval of the replicates.
    """
    try:
        from rliable import library
    except ImportError:
        raise StatisticsUnavailable(f"rliable is not installed: {REPORT_EXTRA_HINT}") from None
    except Exception as exc:  # e.g. arch 7 under pandas 3, which the extra's pin avoids
        raise StatisticsUnavailable(
            f"rliable fails to import ({type(exc).__name__}: {exc}): {REPORT_EXTRA_HINT}"
        ) from None
    layout = _Layout.of(finals)
    present = layout.configs
    iqm: list[Interval | None] = [None] * len(finals)
    profiles: list[Profile | None] = [None] * len(finals)
    improvement: dict[tuple[int, int], Interval] = {}
    if not present:
        return SweepStatistics(iqm, improvement, profiles, reps)
    pairs = [(a, b) for a, b in pairs if finals[a].size and finals[b].size]
    env_taus = {
        env: profile_taus([finals[c] for c in present if envs[c] == env])
        for env in dict.fromkeys(envs[c] for c in present)
    }
    taus = [np.stack([env_taus[envs[c]] for c in columns]) for columns in layout.matrices]
    # Pairs whose two sides lie in the same two matrices are computed together.
    pair_groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a, b in pairs:
        pair_groups.setdefault((layout.place(a)[0], layout.place(b)[0]), []).append((a, b))
    pair_order = [pair for group in pair_groups.values() for pair in group]
    pair_columns = {
        key: ([layout.place(a)[1] for a, _ in group], [layout.place(b)[1] for _, b in group])
        for key, group in pair_groups.items()
    }

    def statistics(*matrices: np.ndarray) -> np.ndarray:
        parts = [interquartile_mean(m) for m in matrices]
        parts += [
            probability_of_improvement(matrices[ma][:, ca], matrices[mb][:, cb])
            for (ma, mb), (ca, cb) in pair_columns.items()
        ]
        parts += [score_distribution(m, t).ravel() for m, t in zip(matrices, taus, strict=True)]
        return np.concatenate(parts)

    with _seeded_global_rng(BOOTSTRAP_SEED):
        points, intervals = library.get_interval_estimates(
            {"sweep": layout.samples(finals)},
            statistics,
            method="percentile",
            reps=reps,
            confidence_interval_size=CONFIDENCE,
        )
    values = iter(zip(points["sweep"], *intervals["sweep"], strict=True))
    for config in present:
        iqm[config] = Interval(*map(float, next(values)))
    for pair in pair_order:
        improvement[pair] = Interval(*map(float, next(values)))
    for config in present:
        grid = env_taus[envs[config]]
        point, low, high = (np.array(v) for v in zip(*(next(values) for _ in grid), strict=True))
        profiles[config] = Profile(envs[config], grid, point, low, high)
    return SweepStatistics(iqm, improvement, profiles, reps)
