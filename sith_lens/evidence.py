"""Evidence for a quality figure: the figure with a 95 % bootstrap interval, its chance level, its
baselines, and its margin over the strongest baseline, pooled over several seeds.

Every toy-world benchmark scores *items* (a caption word in the pointing game, a head in the label
check, an image in an edit) and reports a figure as the mean of per-item scores. Keeping the
per-item scores makes the rest mechanical:

- ``bootstrap`` resamples items (or whole clusters of items, e.g. all words of one image, since
  they share a heat map) to give a percentile interval for any statistic;
- ``compare`` takes the headline's per-item scores next to each baseline's scores *on the same
  items* and gives one ``Evidence``: the figure, every baseline, the chance level, and the paired
  margin over the best of the baselines that the claim has to beat;
- ``format_evidence`` prints it as one table, and ``Evidence.to_json`` puts it in a benchmark's
  JSON line.

Only numpy; no host library.

Example:
    >>> import numpy as np
    >>> hits = np.array([1, 1, 0, 1, 1, 0, 1, 1], float)
    >>> saliency = np.array([1, 0, 0, 1, 0, 0, 1, 0], float)
    >>> ev = compare({"model": hits, "saliency": saliency}, "model", margin_against=["saliency"],
    ...              chance=np.full(8, 0.5))
    >>> round(ev.value.value, 3), round(ev.margin.value, 3), ev.margin_against
    (0.75, 0.375, 'saliency')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

#: Resamples per interval: enough for a stable 95 % percentile interval at two decimals.
N_BOOT = 1000


@dataclass(frozen=True)
class Estimate:
    """A figure and its 95 % bootstrap interval."""

    #: The statistic on the items as measured.
    value: float
    #: 2.5th and 97.5th percentiles of the statistic over bootstrap resamples.
    low: float
    high: float
    #: How many items (or clusters) it rests on.
    n: int

    def to_json(self, digits: int = 4) -> dict:
        """``{"value": ..., "ci95": [low, high], "n": ...}``, rounded."""
        return {"value": round(self.value, digits), "ci95": [round(self.low, digits), round(self.high, digits)],
                "n": self.n}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _as_items(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0 or len(a) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of per-item scores")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite scores; score every item with a finite number")
    return a


def bootstrap(
    statistic: Callable[..., float | np.ndarray],
    *samples: np.ndarray,
    groups: Sequence[np.ndarray | None] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> list[Estimate]:
    """Percentile bootstrap of ``statistic(*samples)``, which returns a number or a 1-D array.

    Each sample's first axis is resampled on its own (samples are independent strata; put paired
    scores in columns of one sample so they are resampled together). With ``groups``, one array of
    cluster ids per sample (or None), whole clusters are resampled: use it when items share a cause
    (the words of one image, one head scored on several seeds).

    Returns one Estimate per output of ``statistic``.

    Example:
        >>> [e.value for e in bootstrap(np.mean, np.array([0.0, 1.0, 1.0, 1.0]))]
        [0.75]
    """
    if not samples:
        raise ValueError("bootstrap needs at least one sample")
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    groups = list(groups) if groups is not None else [None] * len(arrays)
    if len(groups) != len(arrays):
        raise ValueError(f"groups has {len(groups)} entries for {len(arrays)} samples; give one per sample (or None)")
    members: list[list[np.ndarray] | None] = []
    for a, g in zip(arrays, groups):
        if len(a) == 0:
            raise ValueError("every sample needs at least one item")
        if g is None:
            members.append(None)
            continue
        g = np.asarray(g)
        if len(g) != len(a):
            raise ValueError(f"a group array has {len(g)} ids for {len(a)} items; give one id per item")
        _, inverse = np.unique(g, return_inverse=True)
        members.append([np.flatnonzero(inverse == c) for c in range(inverse.max() + 1)])
    value = np.atleast_1d(np.asarray(statistic(*arrays), dtype=np.float64))
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, len(value)))
    for b in range(n_boot):
        resampled = []
        for a, m in zip(arrays, members):
            if m is None:
                resampled.append(a[rng.integers(0, len(a), len(a))])
            else:
                picks = rng.integers(0, len(m), len(m))
                resampled.append(a[np.concatenate([m[i] for i in picks])])
        draws[b] = np.atleast_1d(statistic(*resampled))
    low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    sizes = [len(m) if m is not None else len(a) for a, m in zip(arrays, members)]
    return [Estimate(float(v), float(lo), float(hi), min(sizes)) for v, lo, hi in zip(value, low, high)]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (95 % by default).

    Example:
        >>> [round(x, 2) for x in wilson_interval(4, 7)]
        [0.25, 0.84]
    """
    if n < 1:
        raise ValueError("wilson_interval needs n >= 1")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


#: Below this many clusters a 0/1 score's percentile bootstrap is too narrow (all-hit gives [1, 1]).
FEW_CLUSTERS = 30


def mean_estimate(scores: Sequence[float] | np.ndarray, groups: np.ndarray | None = None, seed: int = 0) -> Estimate:
    """The mean of per-item ``scores`` with its 95 % (cluster) bootstrap interval.

    For 0/1 scores on fewer than ``FEW_CLUSTERS`` clusters, the interval is widened to hold the
    Wilson interval of the clusters' mean hit rate (the bootstrap of 2 agreeing heads would say
    [1, 1]).

    Example:
        >>> mean_estimate([1.0, 0.0, 1.0, 1.0]).value
        0.75
        >>> mean_estimate([1.0, 1.0]).low < 0.5
        True
    """
    items = _as_items(scores, "scores")
    est = bootstrap(np.mean, items, groups=[groups], seed=seed)[0]
    if est.n < FEW_CLUSTERS and np.isin(items, (0.0, 1.0)).all():
        if groups is None:
            hits = items.sum()
        else:
            _, inverse = np.unique(np.asarray(groups), return_inverse=True)
            hits = float(sum(items[inverse == c].mean() for c in range(est.n)))
        low, high = wilson_interval(hits, est.n)
        est = Estimate(est.value, min(est.low, low), max(est.high, high), est.n)
    return est


@dataclass
class Evidence:
    """A headline figure with what is needed to read it."""

    #: The headline: mean per-item score and its interval.
    value: Estimate
    #: Each baseline's mean score on the same items, with its interval.
    baselines: dict[str, Estimate]
    #: The expected score of a random guess (mean of per-item chance), if one applies.
    chance: float | None
    #: The baseline the margin is taken against: the best, on these items, of ``margin_against``.
    margin_against: str | None
    #: Headline minus that baseline, paired per item, with its interval.
    margin: Estimate | None
    #: The headline per seed (the mean over that seed's items).
    per_seed: dict[str, float] = field(default_factory=dict)

    def to_json(self, digits: int = 4) -> dict:
        """The evidence as JSON-ready dicts (``value``, ``ci95``, ``baselines``, ``chance``, ``margin``...)."""
        out = {**self.value.to_json(digits), "chance": None if self.chance is None else round(self.chance, digits),
               "baselines": {k: v.to_json(digits) for k, v in self.baselines.items()}}
        if self.margin is not None:
            out["margin"] = {"against": self.margin_against, **self.margin.to_json(digits)}
        if self.per_seed:
            out["per_seed"] = {k: round(v, digits) for k, v in self.per_seed.items()}
        return out


def compare(
    scores: dict[str, np.ndarray],
    headline: str,
    margin_against: Sequence[str] = (),
    chance: np.ndarray | float | None = None,
    groups: np.ndarray | None = None,
    seeds: np.ndarray | None = None,
    seed: int = 0,
) -> Evidence:
    """Evidence for ``scores[headline]`` against every other entry of ``scores`` (the baselines).

    Args:
        scores: per-item scores [n] of the headline and of each baseline, all on the same items.
        headline: which entry is the claim.
        margin_against: the baselines the claim must beat; the margin is taken against the one with
            the highest mean (e.g. every word-agnostic heat map).
        chance: a random guess's expected score, per item [n] or one number.
        groups: cluster id per item [n] for the bootstrap (items that share a cause).
        seeds: the seed each item comes from [n], for the per-seed figures.

    Example:
        >>> ev = compare({"sith": np.array([1., 0., 1.]), "constant": np.array([1., 1., 0.])}, "sith",
        ...              margin_against=["constant"])
        >>> round(ev.margin.value, 3)
        0.0
    """
    if headline not in scores:
        raise ValueError(f"headline {headline!r} is not among the scores {sorted(scores)}")
    missing = [m for m in margin_against if m not in scores]
    if missing:
        raise ValueError(f"margin_against names {missing}, which have no scores; pass them in scores")
    items = {k: _as_items(v, f"scores[{k!r}]") for k, v in scores.items()}
    n = len(items[headline])
    bad = {k: len(v) for k, v in items.items() if len(v) != n}
    if bad:
        raise ValueError(f"every entry must score the same {n} items as {headline!r}; these differ: {bad}")
    estimates = {k: mean_estimate(v, groups, seed) for k, v in items.items()}
    margin = best = None
    if margin_against:
        best = max(margin_against, key=lambda k: items[k].mean())
        margin = mean_estimate(items[headline] - items[best], groups, seed)
    chance_value = None
    if chance is not None:
        chance_value = float(np.mean(chance))
    per_seed = {}
    if seeds is not None:
        seeds = np.asarray(seeds)
        per_seed = {str(s): float(items[headline][seeds == s].mean()) for s in np.unique(seeds)}
    return Evidence(estimates.pop(headline), estimates, chance_value, best, margin, per_seed)


def format_evidence(title: str, evidence: Evidence, headline_name: str = "headline") -> str:
    """A plain-text table: the headline, each baseline, chance, the margin, per-seed values.

    Example:
        >>> ev = compare({"model": np.ones(40), "saliency": np.zeros(40)}, "model", ["saliency"])
        >>> print(format_evidence("pointing", ev, "LUCID").splitlines()[1])
          LUCID                              1.000 [1.000, 1.000]
    """
    rows = [f"{title} (mean, 95 % interval; n = {evidence.value.n})", f"  {headline_name:<34} {evidence.value}"]
    rows += [f"  {name:<34} {est}" for name, est in evidence.baselines.items()]
    if evidence.chance is not None:
        rows.append(f"  {'chance':<34} {evidence.chance:.3f}")
    if evidence.margin is not None:
        rows.append(f"  {'margin vs ' + str(evidence.margin_against):<34} {evidence.margin}")
    if evidence.per_seed:
        rows.append("  per seed: " + ", ".join(f"{k} {v:.3f}" for k, v in evidence.per_seed.items()))
    return "\n".join(rows)


def label_agreement_scores(
    predicted: Sequence[str], actual: Sequence[str], label_pool: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Per-item agreement of a labeller with the true labels, next to two baselines that ignore the item:

    - ``constant``: the best single label for every item (the majority true label; an upper bound
      on any constant labeller);
    - ``frequency``: a random labeller that draws labels with the labeller's own frequencies over
      ``label_pool`` (default ``predicted``): expected agreement per item is the share of the pool
      holding the item's true label.

    Returns ``{"labeller", "constant", "frequency"}``, each [n] scores in [0, 1].

    Example:
        >>> s = label_agreement_scores(["shape", "color", "shape"], ["shape", "shape", "shape"])
        >>> round(float(s["labeller"].mean()), 3), float(s["constant"].mean())
        (0.667, 1.0)
    """
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predicted labels for {len(actual)} true labels; give one of each per item")
    if not len(actual):
        raise ValueError("no items to score; every item needs a predicted and a true label")
    pool = list(label_pool) if label_pool is not None else list(predicted)
    if not pool:
        raise ValueError("label_pool is empty; pass the labeller's labels over all items")
    values, counts = np.unique(np.asarray(actual), return_counts=True)
    majority = values[counts.argmax()]
    share = {label: pool.count(label) / len(pool) for label in set(pool)}
    return {
        "labeller": np.array([p == a for p, a in zip(predicted, actual)], dtype=np.float64),
        "constant": np.array([a == majority for a in actual], dtype=np.float64),
        "frequency": np.array([share.get(a, 0.0) for a in actual], dtype=np.float64),
    }


def edit_selectivity(
    base: dict[str, np.ndarray],
    edits: dict[str, dict[str, np.ndarray]],
    target: str,
    claim: str = "sith",
    controls: Sequence[str] = ("random",),
    ceiling: str | None = None,
    seed: int = 0,
) -> dict[str, dict]:
    """How selectively each edit removes ``target``: target drop, mean off-target drop, and their
    difference (the selectivity), in percentage points, with 95 % bootstrap intervals over images.

    Args:
        base: attribute -> per-image correctness [n_a] (0/1, or a mean over draws) before editing.
        edits: edit name -> attribute -> per-image correctness on the same images.
        target: the attribute the edits aim at; every other attribute of ``base`` is off target.
        claim: the edit whose margins over ``controls`` are reported (``margin_vs_<control>``, with
            "-" written "_").
        ceiling: an edit that bounds the others (e.g. ablating every head of the edited layers);
            ``share_of_ceiling`` is the claim's target drop over the ceiling's.

    Each attribute's images are resampled together across edits (paired). Returns edit name ->
    ``{"target_drop_pp", "off_target_drop_pp", "selectivity"}``, plus the margins and the share.

    Example:
        >>> base = {"color": np.ones(20), "shape": np.ones(20)}
        >>> edits = {"sith": {"color": np.zeros(20), "shape": np.ones(20)},
        ...          "random": {"color": np.full(20, 0.5), "shape": np.full(20, 0.5)}}
        >>> out = edit_selectivity(base, edits, "color")
        >>> out["sith"]["selectivity"]["value"], out["random"]["selectivity"]["value"]
        (100.0, 0.0)
    """
    attributes = list(base)
    if target not in attributes or len(attributes) < 2:
        raise ValueError(f"target {target!r} must be one of the scored attributes {attributes}, with at least one other")
    needed = [claim, *controls] + ([ceiling] if ceiling else [])
    missing = [n for n in needed if n not in edits]
    if missing:
        raise ValueError(f"edits {missing} are named but not scored; pass their correctness in edits")
    names = list(edits)
    for n in names:
        if set(edits[n]) != set(attributes) or any(len(edits[n][a]) != len(base[a]) for a in attributes):
            raise ValueError(f"edit {n!r} must score the same attributes and images as base")
    samples = [np.stack([np.asarray(base[a], float) - np.asarray(edits[n][a], float) for n in names], 1)
               for a in attributes]
    t, col = attributes.index(target), {n: j for j, n in enumerate(names)}

    def stat(*drops: np.ndarray) -> np.ndarray:
        mean = np.stack([100 * d.mean(0) for d in drops])  # [attributes, edits]
        target_drop, off = mean[t], np.delete(mean, t, axis=0).mean(0)
        sel = target_drop - off
        margins = [sel[col[claim]] - sel[col[c]] for c in controls]
        share = []
        if ceiling:
            top = target_drop[col[ceiling]]
            share = [target_drop[col[claim]] / top if top > 0 else np.nan]
        return np.concatenate([target_drop, off, sel, margins, share])

    est = bootstrap(stat, *samples, seed=seed)
    k = len(names)
    out: dict[str, dict] = {n: {"target_drop_pp": est[j].to_json(2), "off_target_drop_pp": est[k + j].to_json(2),
                                "selectivity": est[2 * k + j].to_json(2)} for n, j in col.items()}
    for i, c in enumerate(controls):
        out[f"margin_vs_{c.replace('-', '_')}"] = est[3 * k + i].to_json(2)
    if ceiling:
        out["share_of_ceiling"] = est[3 * k + len(controls)].to_json(3)
    return out
