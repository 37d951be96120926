"""Bias profiles: which attributes of a response predict that a rater chooses it.

For every judged pair the response shown first is compared with the one shown second. A
logistic regression of "first response chosen" on the attribute differences (first - second)
gives one coefficient per attribute, in log-odds per unit of difference, plus an intercept that
is the position effect (positive = the first response is favoured whatever it says). Standard
errors come from the inverse Hessian of the log-likelihood at the maximum (the Fisher
information), so each coefficient has a Wald 95 % confidence interval and a p-value.

The default attribute is length as ``log(1 + words)``: its difference is the log ratio of the two
lengths, so the length coefficient ``b`` means "doubling a response's length multiplies the odds
of choosing it by ``2**b``". Pass more attributes as ``{name: callable(text) -> float}``, or name
personality scorers (``rlhfkit.personality.scorers``) with ``scorers=["refusal", ...]``.

Ties are left out (a tie is not a choice). When the source does not record which response was
shown first, each pair is put in a random (seeded) order and no intercept is fitted: the order is
then unrelated to the choice, so the attribute coefficients stay unbiased.

Example::

    >>> from rlhfkit.raters.bias import bias_profile
    >>> profile = bias_profile(pairs)  # doctest: +SKIP
    >>> profile.coefficients["length"].estimate  # doctest: +SKIP
    0.42
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from rlhfkit.data.records import PreferencePair
from rlhfkit.errors import InputError

TextAttribute = Callable[[str], float]
BatchScorer = Callable[[list[str]], Sequence[float]]

Z95 = float(stats.norm.ppf(0.975))


def log_words(text: str) -> float:
    """``log(1 + number of whitespace-separated words)``: differences are log length ratios."""
    return math.log1p(len(text.split()))


DEFAULT_ATTRIBUTES: dict[str, TextAttribute] = {"length": log_words}
"""Attributes that need nothing but the text."""


def personality_scorers(names: Iterable[str]) -> dict[str, BatchScorer]:
    """Batch scorers for attributes of ``rlhfkit.personality.scorers`` (imported only here)."""
    names = list(names)
    if not names:
        return {}
    try:
        from rlhfkit.personality.scorers import score
    except ImportError as exc:  # the personality package is optional for the audit
        raise InputError(f"personality scorers are not available ({exc})") from None
    return {name: (lambda texts, _n=name: score(_n, texts)) for name in names}


@dataclass
class Coefficient:
    """One fitted coefficient, in log-odds of choosing the first response."""

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    diff_sd: float
    """Standard deviation of the attribute difference in the data; estimate x diff_sd is the
    effect of a typical difference (comparable across attributes on different scales)."""


@dataclass
class BiasProfile:
    """What predicted one rater's (or the pool's) choices."""

    rater_id: str | None
    """None for the whole pool."""
    n_judgments: int
    """Judgments used in the fit (ties excluded)."""
    n_ties: int
    position_known: bool
    """Whether the source recorded which response was shown first (then ``position`` is fitted)."""
    converged: bool
    """False when the fit did not settle (e.g. an attribute separates the choices perfectly)."""
    std_errors: str = ""
    """How standard errors were computed: from the model, or cluster-robust by item."""
    coefficients: dict[str, Coefficient] = field(default_factory=dict)
    longer_chosen: dict[str, float] = field(default_factory=dict)
    """Share of judgments (different word counts, ties excluded) where the longer response was
    chosen, with its Wilson 95 % interval: comparable to "humans prefer the longer answer 64 %"."""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    clusters: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Maximum-likelihood logistic regression by Newton's method.

    ``x`` is (n, k) including any intercept column, ``y`` is (n,) of 0/1. Returns the estimates,
    their standard errors and whether the fit converged. Standard errors are the square roots of
    the diagonal of the inverse Hessian; with ``clusters`` (n,) they are cluster-robust
    (sandwich, with the G/(G-1) correction), for judgments that share an item and so are not
    independent. Non-convergence (separation) leaves estimates and errors as NaN.
    """
    n, k = x.shape
    beta = np.zeros(k)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))  # (n,)
        grad = x.T @ (y - p)  # (k,)
        hess = (x * (p * (1 - p))[:, None]).T @ x  # (k, k): the observed = expected information
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        # Separation drives coefficients to infinity; stop before exp() overflows.
        if not np.all(np.isfinite(beta)) or np.abs(beta).max() > 50:
            break
        if np.abs(step).max() < tol:
            p = 1.0 / (1.0 + np.exp(-(x @ beta)))
            hess = (x * (p * (1 - p))[:, None]).T @ x
            cov = np.linalg.pinv(hess)
            if clusters is not None:
                cov = _cluster_robust(cov, x * (y - p)[:, None], clusters)
            return beta, np.sqrt(np.clip(np.diag(cov), 0, None)), True
    return np.full(k, np.nan), np.full(k, np.nan), False


def _cluster_robust(cov: np.ndarray, scores: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Sandwich covariance: bread = inverse Hessian, meat = sum of per-cluster score outer
    products. ``scores`` is (n, k), each row x_i (y_i - p_i)."""
    _, index = np.unique(clusters, return_inverse=True)
    g = index.max() + 1
    per_cluster = np.zeros((g, scores.shape[1]))  # (clusters, k)
    np.add.at(per_cluster, index, scores)
    meat = per_cluster.T @ per_cluster
    return cov @ meat @ cov * (g / (g - 1) if g > 1 else 1.0)


def fit_bias(
    first: Sequence[str],
    second: Sequence[str],
    first_chosen: Sequence[bool],
    attributes: Mapping[str, TextAttribute] | None = None,
    scorers: Mapping[str, BatchScorer] | None = None,
    *,
    position_known: bool = True,
    rater_id: str | None = None,
    n_ties: int = 0,
    clusters: Sequence[Any] | None = None,
) -> BiasProfile:
    """Fit a bias profile on parallel lists (the core that pairs, the store and pools feed).

    ``clusters`` (e.g. item ids) makes the standard errors cluster-robust; pass it whenever
    several judgments are of the same pair.

    Example::

        >>> fit_bias(["a b c", "x"], ["a", "y z w"], [True, False]).n_judgments
        2
    """
    if not (len(first) == len(second) == len(first_chosen)):
        raise InputError("bias: first, second and first_chosen must have the same length")
    y = np.asarray(first_chosen, dtype=float)  # (n,)
    names, columns = _attribute_differences(list(first), list(second), attributes, scorers)
    if position_known:
        names, columns = ["position", *names], [np.ones(len(y)), *columns]
    profile = BiasProfile(
        rater_id=rater_id,
        n_judgments=len(y),
        n_ties=n_ties,
        position_known=position_known,
        converged=False,
        std_errors="cluster-robust by item" if clusters is not None else "model (inverse Hessian)",
        longer_chosen=_longer_chosen(first, second, y),
    )
    # A constant difference (e.g. every response equally long) cannot be estimated: leave it out.
    keep = [
        i
        for i, (n, c) in enumerate(zip(names, columns, strict=True))
        if n == "position" or np.ptp(c) > 0
    ]
    if len(y) <= len(keep) or len(keep) == 0:
        return profile
    x = np.column_stack([columns[i] for i in keep])  # (n, k)
    groups = np.asarray([str(c) for c in clusters]) if clusters is not None else None
    beta, se, profile.converged = fit_logistic(x, y, groups)
    for j, i in enumerate(keep):
        z = beta[j] / se[j] if se[j] > 0 else math.nan
        profile.coefficients[names[i]] = Coefficient(
            estimate=float(beta[j]),
            std_error=float(se[j]),
            ci_low=float(beta[j] - Z95 * se[j]),
            ci_high=float(beta[j] + Z95 * se[j]),
            p_value=float(2 * stats.norm.sf(abs(z))) if not math.isnan(z) else math.nan,
            diff_sd=0.0 if names[i] == "position" else float(np.std(columns[i])),
        )
    return profile


def _attribute_differences(
    first: list[str],
    second: list[str],
    attributes: Mapping[str, TextAttribute] | None,
    scorers: Mapping[str, BatchScorer] | None,
) -> tuple[list[str], list[np.ndarray]]:
    attributes = DEFAULT_ATTRIBUTES if attributes is None else attributes
    # Score each distinct text once: the same response often appears in many judgments.
    texts = list(dict.fromkeys(first + second))
    where = {t: i for i, t in enumerate(texts)}
    a, b = [where[t] for t in first], [where[t] for t in second]
    names, columns = [], []
    for name, fn in attributes.items():
        values = np.array([float(fn(t)) for t in texts])
        names.append(name)
        columns.append(values[a] - values[b])
    for name, batch in (scorers or {}).items():
        values = np.asarray(batch(texts), dtype=float)
        names.append(name)
        columns.append(values[a] - values[b])
    for name, col in zip(names, columns, strict=True):
        if not np.all(np.isfinite(col)):
            raise InputError(f"bias: attribute {name!r} gave a non-finite score")
    return names, columns


def _longer_chosen(first: Sequence[str], second: Sequence[str], y: np.ndarray) -> dict[str, float]:
    w1 = np.array([len(t.split()) for t in first])
    w2 = np.array([len(t.split()) for t in second])
    differ = w1 != w2
    n = int(differ.sum())
    if n == 0:
        return {"share": math.nan, "n": 0, "ci_low": math.nan, "ci_high": math.nan}
    k = int(((w1 > w2) == (y == 1))[differ].sum())
    p, z = k / n, Z95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"share": p, "n": n, "ci_low": centre - half, "ci_high": centre + half}


def first_shown(pair: PreferencePair) -> str | None:
    """``"chosen"`` or ``"rejected"``: which response the rater saw first, when recorded.

    Read from ``pair.meta["shown_first"]`` (values ``"chosen"``/``"rejected"``), the convention
    for readers and store exports that know the presentation order. PandaLM pairs carry
    ``meta["votes"]`` instead: response1 was shown first, and a vote of 2 means it lost.
    """
    meta = pair.meta or {}
    value = meta.get("shown_first")
    if value in ("chosen", "rejected"):
        return value
    votes = meta.get("votes")
    if isinstance(votes, dict) and votes.get(pair.rater_id) in (0, 1, 2):
        return "rejected" if votes[pair.rater_id] == 2 else "chosen"
    return None


def _pair_arrays(
    pairs: Sequence[PreferencePair], seed: int
) -> tuple[list[str], list[str], np.ndarray, bool, int]:
    decided = [p for p in pairs if not p.tie]
    shown = [first_shown(p) for p in decided]
    # Position is only meaningful when every judgment recorded it; otherwise randomise the order.
    known = bool(decided) and all(s is not None for s in shown)
    if not known:
        flips = np.random.default_rng(seed).random(len(decided)) < 0.5
        shown = ["rejected" if f else "chosen" for f in flips]
    first = [p.chosen if s == "chosen" else p.rejected for p, s in zip(decided, shown, strict=True)]
    second = [
        p.rejected if s == "chosen" else p.chosen for p, s in zip(decided, shown, strict=True)
    ]
    y = np.array([s == "chosen" for s in shown], dtype=bool)
    return first, second, y, known, len(pairs) - len(decided)


def bias_profile(
    pairs: Sequence[PreferencePair],
    attributes: Mapping[str, TextAttribute] | None = None,
    scorers: Mapping[str, BatchScorer] | None = None,
    *,
    rater_id: str | None = None,
    seed: int = 0,
) -> BiasProfile:
    """The bias profile of a list of judgments (one rater's, or a whole pool's).

    Example::

        >>> from rlhfkit.data.records import PreferencePair
        >>> pairs = [PreferencePair([], "a long detailed answer", "short") for _ in range(3)]
        >>> bias_profile(pairs).longer_chosen["share"]
        1.0
    """
    first, second, y, known, ties = _pair_arrays(pairs, seed)
    items = [p.item_id for p in pairs if not p.tie]
    # Judgments of the same item by several raters are correlated: cluster the errors by item.
    repeated = all(i is not None for i in items) and len(set(items)) < len(items)
    return fit_bias(
        first,
        second,
        y,
        attributes,
        scorers,
        position_known=known,
        rater_id=rater_id,
        n_ties=ties,
        clusters=items if repeated else None,
    )


def bias_profiles(
    pairs: Sequence[PreferencePair],
    attributes: Mapping[str, TextAttribute] | None = None,
    scorers: Mapping[str, BatchScorer] | None = None,
    *,
    min_judgments: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """The pool's profile and one per rater with at least ``min_judgments`` decided judgments.

    Returns ``{"pool": BiasProfile, "raters": {rater_id: BiasProfile}, "skipped_raters": n}``.
    """
    by_rater: dict[str, list[PreferencePair]] = {}
    for p in pairs:
        if p.rater_id is not None:
            by_rater.setdefault(str(p.rater_id), []).append(p)
    raters, skipped = {}, 0
    for rater, own in sorted(by_rater.items()):
        if sum(not p.tie for p in own) < min_judgments:
            skipped += 1
            continue
        raters[rater] = bias_profile(own, attributes, scorers, rater_id=rater, seed=seed)
    return {
        "pool": bias_profile(pairs, attributes, scorers, seed=seed),
        "raters": raters,
        "skipped_raters": skipped,
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --- files ---------------------------------------------------------------------------------------


def load_pairs(path: str | Path, format: str | None = None) -> list[PreferencePair]:
    """Judged pairs from any preference format :mod:`rlhfkit.data` reads (hh, pandalm, oasst,
    trl...; detected when ``format`` is None).

    Example::

        >>> len(load_pairs("harmless-base-dev.jsonl.gz"))  # doctest: +SKIP
        1800
    """
    from rlhfkit.data import FORMATS, detect_format, read_preferences
    from rlhfkit.data.files import check_readable
    from rlhfkit.data.formats import PREFERENCES, get_format

    path = check_readable(Path(path))
    name = format or detect_format(path)
    if name in FORMATS and get_format(name).reader(PREFERENCES) is None:
        raise InputError(
            f"{path}: {name} holds single labelled responses, not judged pairs; expected a"
            " preference file (hh, pandalm, oasst, trl); for its labels use `audit agreement`"
        )
    return read_preferences(path, name)


def audit_bias(
    path: str | Path,
    format: str | None = None,
    scorers: Sequence[str] = (),
    *,
    min_judgments: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """``rlhfkit audit bias``: pool and per-rater bias profiles of a file, JSON-ready.

    Example::

        >>> audit_bias("harmless-base-dev.jsonl.gz")["pool"]["coefficients"]["length"]  # doctest: +SKIP
        {'estimate': -0.36, ...}
    """
    pairs = load_pairs(path, format)
    out = bias_profiles(
        pairs, scorers=personality_scorers(scorers), min_judgments=min_judgments, seed=seed
    )
    return {
        "source": str(path),
        "n_pairs": len(pairs),
        "pool": out["pool"].to_dict(),
        "raters": {k: v.to_dict() for k, v in out["raters"].items()},
        "skipped_raters": out["skipped_raters"],
    }


def format_bias(report: dict[str, Any]) -> str:
    """A short human-readable table of :func:`audit_bias`'s output."""
    lines = [f"source  {report['source']}  ({report['n_pairs']} judgments)"]
    profiles = {"(pool)": report["pool"], **report["raters"]}
    for who, prof in profiles.items():
        share = prof["longer_chosen"]
        lines.append(
            f"{who}: {prof['n_judgments']} decided, {prof['n_ties']} ties,"
            f" position {'recorded' if prof['position_known'] else 'not recorded'},"
            f" SE {prof['std_errors']}{'' if prof['converged'] else ', DID NOT CONVERGE'}"
        )
        if share["n"]:
            lines.append(
                f"  longer response chosen {share['share']:.3f}"
                f" [{share['ci_low']:.3f}, {share['ci_high']:.3f}] of {share['n']}"
            )
        for name, c in prof["coefficients"].items():
            if c["estimate"] is None:
                lines.append(f"  {name:12s} not estimable")
                continue
            lines.append(
                f"  {name:12s} {c['estimate']:+.3f}  95% CI [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                f"  p={c['p_value']:.2g}"
            )
    if report["skipped_raters"]:
        lines.append(f"({report['skipped_raters']} raters with too few judgments not profiled)")
    return "\n".join(lines)
