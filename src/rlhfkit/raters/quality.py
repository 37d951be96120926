"""Rater quality: how much raters agree, how far to trust each one, and who deserves a look.

Every function works on one long table of annotations, one row per ``(item_id, rater_id,
label)``, so files, the platform's store and simulated pools all feed the same code. Labels are
nominal (any hashable value: ``"first"``, ``"tie"``, ``"2_full_refusal"``...).

Example::

    >>> from rlhfkit.raters.quality import annotation_table, fleiss_kappa, percent_agreement
    >>> ann = annotation_table([
    ...     ("q1", "ana", "A"), ("q1", "bo", "A"), ("q1", "cy", "B"),
    ...     ("q2", "ana", "B"), ("q2", "bo", "B"), ("q2", "cy", "B"),
    ... ])
    >>> round(percent_agreement(ann), 3)
    0.667
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlhfkit.data.records import Example, PreferencePair
from rlhfkit.errors import InputError

COLUMNS = ["item_id", "rater_id", "label"]

FLAG_MARGIN = 0.15
"""A rater is flagged when even the optimistic end (95 % Wilson upper bound) of their agreement
with peers lies more than this far below the median of the other raters. Realistic raw agreement
on open-ended comparisons spans 63-77 % (14 points), so 15 points below the pool's typical rater
is outside the spread that honest, careful raters show."""


def annotation_table(rows: Iterable[Any] | pd.DataFrame) -> pd.DataFrame:
    """Validate annotations into a DataFrame with columns item_id, rater_id, label.

    ``rows`` is a DataFrame with those columns, or an iterable of ``(item, rater, label)``
    tuples or mappings with those keys. A rater labelling the same item twice is an error (the
    store or caller decides which judgment counts).

    Example::

        >>> annotation_table([{"item_id": 1, "rater_id": "a", "label": "x"}]).shape
        (1, 3)
    """
    if isinstance(rows, pd.DataFrame):
        missing = [c for c in COLUMNS if c not in rows.columns]
        if missing:
            raise InputError(
                f"annotations: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}"
            )
        df = rows[COLUMNS].copy()
    else:
        records = []
        for n, row in enumerate(rows):
            if isinstance(row, Mapping):
                try:
                    records.append((row["item_id"], row["rater_id"], row["label"]))
                except KeyError as exc:
                    raise InputError(
                        f"annotations: row {n}: missing field {exc.args[0]!r}"
                    ) from None
            elif isinstance(row, (tuple, list)) and len(row) == 3:
                records.append(tuple(row))
            else:
                raise InputError(
                    f"annotations: row {n}: expected (item_id, rater_id, label), got {row!r:.80}"
                )
        df = pd.DataFrame(records, columns=COLUMNS)
    if df[COLUMNS].isna().any().any():
        bad = df[df[COLUMNS].isna().any(axis=1)].index[0]
        raise InputError(f"annotations: row {bad}: item_id, rater_id and label must all be set")
    dup = df.duplicated(["item_id", "rater_id"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise InputError(
            f"annotations: rater {first.rater_id!r} labelled item {first.item_id!r} more than once;"
            " expected one label per rater and item"
        )
    return df.reset_index(drop=True)


def _counts(ann: pd.DataFrame) -> pd.DataFrame:
    """Items x labels table of how many raters gave each label."""
    return pd.crosstab(ann["item_id"], ann["label"])


def _multi_rated(counts: pd.DataFrame) -> pd.DataFrame:
    # Agreement needs at least two ratings of an item; singly rated items carry no information.
    return counts[counts.sum(axis=1) >= 2]


def percent_agreement(ann: pd.DataFrame) -> float:
    """Share of agreeing rater pairs, pooled over all items rated by two or more raters."""
    c = _multi_rated(_counts(ann)).to_numpy()
    m = c.sum(axis=1)
    pairs = (m * (m - 1)).sum()
    return float((c * (c - 1)).sum() / pairs) if pairs else math.nan


def fleiss_kappa(ann: pd.DataFrame) -> float:
    """Fleiss' kappa. With unequal raters per item, each item's observed agreement uses its own
    count (items with one rating are left out); with equal counts this is Fleiss (1971)."""
    c = _multi_rated(_counts(ann)).to_numpy().astype(float)
    if len(c) == 0:
        return math.nan
    m = c.sum(axis=1)
    p_obs = ((c * (c - 1)).sum(axis=1) / (m * (m - 1))).mean()
    p = c.sum(axis=0) / c.sum()
    p_exp = (p**2).sum()
    return float((p_obs - p_exp) / (1 - p_exp)) if p_exp < 1 else math.nan


def krippendorff_alpha(ann: pd.DataFrame) -> float:
    """Krippendorff's alpha for nominal labels (missing ratings allowed), via ``krippendorff``."""
    import krippendorff

    if ann.empty or ann["label"].nunique() < 2:
        return math.nan  # alpha is undefined when no variation is possible
    codes, _ = pd.factorize(ann["label"], sort=True)
    wide = (
        ann.assign(code=codes.astype(float))
        .pivot(index="rater_id", columns="item_id", values="code")
        .to_numpy()
    )
    try:
        return float(krippendorff.alpha(reliability_data=wide, level_of_measurement="nominal"))
    except ValueError:
        return math.nan  # e.g. no item with two ratings


def cohen_kappa(ann: pd.DataFrame, rater_a: Hashable, rater_b: Hashable) -> float:
    """Cohen's kappa between two raters on the items both labelled."""
    return _pair_stats(ann, rater_a, rater_b)[2]


def _pair_stats(ann: pd.DataFrame, a: Hashable, b: Hashable) -> tuple[int, float, float]:
    la = ann[ann.rater_id == a].set_index("item_id")["label"]
    lb = ann[ann.rater_id == b].set_index("item_id")["label"]
    both = la.index.intersection(lb.index)
    if len(both) == 0:
        return 0, math.nan, math.nan
    x, y = la.loc[both], lb.loc[both]
    p_obs = float((x.to_numpy() == y.to_numpy()).mean())
    px, py = x.value_counts(normalize=True), y.value_counts(normalize=True)
    p_exp = float((px * py.reindex(px.index, fill_value=0.0)).sum())
    kappa = (p_obs - p_exp) / (1 - p_exp) if p_exp < 1 else math.nan
    return len(both), p_obs, kappa


def cohen_kappa_pairs(ann: pd.DataFrame, min_overlap: int = 2) -> pd.DataFrame:
    """Cohen's kappa and raw agreement for every pair of raters sharing ``min_overlap`` items."""
    raters = sorted(ann["rater_id"].unique(), key=str)
    items = ann.groupby("rater_id")["item_id"].apply(set)
    rows = []
    for i, a in enumerate(raters):
        for b in raters[i + 1 :]:
            if len(items[a] & items[b]) < min_overlap:
                continue
            n, agree, kappa = _pair_stats(ann, a, b)
            rows.append(
                {"rater_a": a, "rater_b": b, "n_items": n, "agreement": agree, "kappa": kappa}
            )
    return pd.DataFrame(rows, columns=["rater_a", "rater_b", "n_items", "agreement", "kappa"])


def item_agreement(ann: pd.DataFrame) -> pd.DataFrame:
    """Per item: ratings, majority label (None without a unique one), its share, pair agreement."""
    counts = _counts(ann)
    c = counts.to_numpy()
    m = c.sum(axis=1)
    top = c.max(axis=1)
    unique_top = (c == top[:, None]).sum(axis=1) == 1
    labels = counts.columns.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        pair = np.where(m >= 2, (c * (c - 1)).sum(axis=1) / (m * (m - 1)), np.nan)
    return pd.DataFrame(
        {
            "n_ratings": m,
            "majority_label": [
                lab if u else None
                for lab, u in zip(labels[c.argmax(axis=1)], unique_top, strict=True)
            ],
            "majority_share": top / m,
            "pair_agreement": pair,
            "unanimous": (top == m) & (m >= 2),
        },
        index=counts.index,
    )


def majority_vote(ann: pd.DataFrame) -> pd.Series:
    """The unique most frequent label per item; items with a tied top count are left out."""
    maj = item_agreement(ann)["majority_label"]
    return maj[maj.notna()]


def label_agreement(ann: pd.DataFrame) -> pd.DataFrame:
    """Per label: count, share, Fleiss' per-category kappa, and specific agreement (of the rater
    pairs in which at least one rater used the label, the share in which both did)."""
    c = _multi_rated(_counts(ann))
    x = c.to_numpy().astype(float)
    m = x.sum(axis=1, keepdims=True)
    # Fleiss (1971) eq. for kappa_j, with each item's own rater count in place of a constant n.
    disagree = (x * (m - x) / (m - 1)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # no multi-rated items: NaN, not noise
        p = x.sum(axis=0) / x.sum()
        kappa = 1 - disagree / (x.sum() * p * (1 - p))
        agree_pairs = (x * (x - 1)).sum(axis=0)
        specific = agree_pairs / (agree_pairs + (x * (m - x)).sum(axis=0))
    all_counts = ann["label"].value_counts()
    return pd.DataFrame(
        {
            "count": all_counts.reindex(c.columns).to_numpy(),
            "share": (all_counts / all_counts.sum()).reindex(c.columns).to_numpy(),
            "kappa": kappa,
            "specific_agreement": specific,
        },
        index=c.columns,
    )


def _wilson_upper(successes: np.ndarray, n: np.ndarray, z: float = 1.96) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        centre = p + z * z / (2 * n)
        spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre + spread) / (1 + z * z / n)


def rater_agreement(ann: pd.DataFrame, margin: float = FLAG_MARGIN) -> pd.DataFrame:
    """Per rater: agreement with peers and with the others' majority (leave-one-out), and a flag.

    ``peer_agreement`` is the share of (this rater, other rater) pairs on shared items that gave
    the same label. ``loo_majority_agreement`` compares the rater with the unique majority of the
    *other* raters of each item. ``flagged`` is True when the Wilson 95 % upper bound of
    ``peer_agreement`` (using the number of shared items as n, since pairs on one item are not
    independent) is below ``threshold`` = median peer agreement of the other raters - ``margin``.
    Needs three or more raters (with two, each one's agreement is the other's).
    """
    counts = _counts(ann)
    c = counts.to_numpy()
    item_pos = pd.Index(counts.index).get_indexer(ann["item_id"])
    label_pos = pd.Index(counts.columns).get_indexer(ann["label"])
    others = c[item_pos].copy()  # (annotations, labels): the other raters' counts on the item
    others[np.arange(len(ann)), label_pos] -= 1
    n_others = others.sum(axis=1)
    top = others.max(axis=1)
    has_majority = (n_others > 0) & ((others == top[:, None]).sum(axis=1) == 1)
    per = pd.DataFrame(
        {
            "rater_id": ann["rater_id"].to_numpy(),
            "shared": (n_others > 0).astype(int),
            "peer_pairs": n_others,
            "peer_agree": others[np.arange(len(ann)), label_pos],
            "loo_items": has_majority.astype(int),
            "loo_agree": (has_majority & (others.argmax(axis=1) == label_pos)).astype(int),
        }
    )
    g = per.groupby("rater_id").sum()
    out = pd.DataFrame(index=g.index)
    out["n_items"] = ann.groupby("rater_id").size()
    out["n_shared_items"] = g["shared"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["peer_agreement"] = g["peer_agree"] / g["peer_pairs"]
        out["loo_majority_agreement"] = g["loo_agree"] / g["loo_items"]
    upper = _wilson_upper(out["peer_agreement"].to_numpy() * g["shared"], g["shared"].to_numpy())
    agreement = out["peer_agreement"].to_numpy()
    threshold = np.full(len(out), np.nan)
    if len(out) >= 3:
        for i in range(len(out)):
            rest = np.delete(agreement, i)
            rest = rest[~np.isnan(rest)]
            if len(rest):
                threshold[i] = np.median(rest) - margin
    out["threshold"] = threshold
    out["flagged"] = np.nan_to_num(upper, nan=1.0) < np.nan_to_num(threshold, nan=-1.0)
    return out


def gold_accuracy(ann: pd.DataFrame, gold: Mapping[Hashable, Hashable]) -> pd.DataFrame:
    """Per rater (and ``"(pool)"``): how many gold items they labelled and the share right."""
    truth = ann["item_id"].map(dict(gold))
    scored = ann[truth.notna()].assign(correct=lambda d: d["label"] == truth[truth.notna()])
    out = scored.groupby("rater_id")["correct"].agg(n_gold="size", accuracy="mean")
    pool = pd.DataFrame(
        {
            "n_gold": [len(scored)],
            "accuracy": [scored["correct"].mean() if len(scored) else np.nan],
        },
        index=["(pool)"],
    )
    return pd.concat([out, pool])


@dataclass
class DawidSkeneResult:
    """Aggregated labels and rater trust from Dawid-Skene (crowd-kit)."""

    labels: pd.Series
    """Most probable true label per item."""
    confidence: pd.Series
    """Posterior probability of that label."""
    trust: pd.Series
    """Per rater: expected accuracy = sum over labels of prior(label) x P(rater says it | it)."""
    errors: pd.DataFrame
    """Per rater confusion matrices, P(observed label | true label) (crowd-kit's ``errors_``)."""
    majority_items: int = 0
    """Items with a unique majority label."""
    agreement_with_majority: float = math.nan
    """Share of those on which Dawid-Skene picks the majority label."""


def dawid_skene(ann: pd.DataFrame, n_iter: int = 100) -> DawidSkeneResult:
    """Fit Dawid-Skene by EM (crowd-kit) and compare its labels with the majority vote."""
    from crowdkit.aggregation import DawidSkene

    data = ann.rename(columns={"item_id": "task", "rater_id": "worker"})
    model = DawidSkene(n_iter=n_iter).fit(data)
    errors, priors = model.errors_, model.priors_
    trust = {}
    for worker, conf in errors.groupby(level="worker"):
        conf = conf.droplevel("worker")
        # Diagonal P(says c | truth c), for the labels this rater ever used (others are 0).
        diag = pd.Series({c: conf.at[c, c] if c in conf.index else 0.0 for c in priors.index})
        trust[worker] = float((priors * diag).sum())
    maj = majority_vote(ann)
    agree = (model.labels_.reindex(maj.index) == maj).mean() if len(maj) else math.nan
    return DawidSkeneResult(
        labels=model.labels_,
        confidence=model.probas_.max(axis=1),
        trust=pd.Series(trust, name="trust"),
        errors=errors,
        majority_items=len(maj),
        agreement_with_majority=float(agree),
    )


@dataclass
class Annotations:
    """An annotation table plus, where the source has them, gold labels per item."""

    table: pd.DataFrame
    gold: dict[Hashable, Hashable] = field(default_factory=dict)
    source: str = ""
    """Where it came from (path and format), for reports."""


def agreement_report(
    annotations: Annotations | pd.DataFrame,
    *,
    margin: float = FLAG_MARGIN,
    min_overlap: int = 10,
    per_item: bool = False,
    n_iter: int = 100,
) -> dict[str, Any]:
    """Every quality statistic of one annotation set as a JSON-ready dict.

    Example::

        >>> from rlhfkit.raters.quality import load_annotations, agreement_report
        >>> report = agreement_report(load_annotations("testset-v1.json"))  # doctest: +SKIP
        >>> round(report["fleiss_kappa"], 3)  # doctest: +SKIP
        0.864
    """
    if isinstance(annotations, pd.DataFrame):
        annotations = Annotations(annotation_table(annotations))
    ann = annotations.table
    if ann.empty:
        raise InputError(
            f"{annotations.source or 'annotations'}: no annotations to analyse; expected rows of item_id, rater_id, label"
        )
    items = item_agreement(ann)
    raters = rater_agreement(ann, margin=margin)
    ds = dawid_skene(ann, n_iter=n_iter)
    raters["ds_trust"] = ds.trust.reindex(raters.index)
    report: dict[str, Any] = {
        "source": annotations.source,
        "n_annotations": len(ann),
        "n_items": int(len(items)),
        "n_multi_rated_items": int((items["n_ratings"] >= 2).sum()),
        "n_raters": int(ann["rater_id"].nunique()),
        "labels": sorted(map(str, ann["label"].unique())),
        "percent_agreement": percent_agreement(ann),
        "unanimous_items": int(items["unanimous"].sum()),
        "fleiss_kappa": fleiss_kappa(ann),
        "krippendorff_alpha": krippendorff_alpha(ann),
        "cohen_kappa": _records(cohen_kappa_pairs(ann, min_overlap=min_overlap)),
        "per_rater": _records(raters, "rater_id"),
        "per_label": _records(label_agreement(ann), "label"),
        "flag_rule": (
            f"flagged when the 95% Wilson upper bound of peer agreement < median of the other"
            f" raters' peer agreement - {margin:g} (needs 3+ raters)"
        ),
        "flagged_raters": [str(r) for r in raters.index[raters["flagged"]]],
        "dawid_skene": {
            "majority_items": ds.majority_items,
            "agreement_with_majority": ds.agreement_with_majority,
            "labels": {str(k): int(v) for k, v in ds.labels.value_counts().items()},
        },
    }
    if annotations.gold:
        report["gold_accuracy"] = _records(gold_accuracy(ann, annotations.gold), "rater_id")
    if per_item:
        items["ds_label"] = ds.labels.reindex(items.index)
        items["ds_confidence"] = ds.confidence.reindex(items.index)
        report["per_item"] = _records(items, "item_id")
    return _jsonable(report)


def _records(df: pd.DataFrame, index_name: str | None = None) -> list[dict[str, Any]]:
    if index_name is not None:
        df = df.rename_axis(index_name).reset_index()
    return df.to_dict(orient="records")


def _jsonable(obj: Any) -> Any:
    """numpy scalars to Python, NaN to None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# --- files ---------------------------------------------------------------------------------------

GENERIC_FORMAT = "annotations"
"""A CSV or JSON lines table with item_id, rater_id, label (and optional gold) columns, e.g. a
store export. Every other format is read by :mod:`rlhfkit.data`: preference formats whose pairs
carry rater_id and item_id (pandalm, trl exports), and ``xstest-completions`` (alias
``xstest``), whose annotation_1/annotation_2 columns are the raters and final_label the gold."""

XSTEST_RATERS = ("annotation_1", "annotation_2")


def load_annotations(path: str | Path, format: str | None = None) -> Annotations:
    """Read a file of multi-rater labels into an :class:`Annotations` table.

    ``format`` is ``"annotations"`` or a :mod:`rlhfkit.data` format; None detects it.

    Example::

        >>> ann = load_annotations("xstest_v2_completions_gpt4.csv")  # doctest: +SKIP
        >>> cohen_kappa(ann.table, "annotation_1", "annotation_2")  # doctest: +SKIP
        0.970...
    """
    from rlhfkit.data import read_examples, read_preferences
    from rlhfkit.data.files import check_readable, head_bytes

    path = check_readable(Path(path))
    if format is None and _looks_like_table(head_bytes(path)):
        format = GENERIC_FORMAT
    if format == GENERIC_FORMAT:
        return _load_generic(path)
    if format == "xstest":
        format = "xstest-completions"
    if format == "xstest-completions" or _is_xstest(path, format):
        examples = read_examples(path, format)
        return annotations_from_examples(examples, XSTEST_RATERS, "final_label", f"{path}")
    return annotations_from_pairs(read_preferences(path, format), f"{path}")


def _looks_like_table(head: bytes) -> bool:
    first = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n").split("\n", 1)[0]
    return "item_id" in first and "rater_id" in first and "chosen" not in first


def _is_xstest(path: Path, format: str | None) -> bool:
    from rlhfkit.data import detect_format

    return format is None and detect_format(path) == "xstest-completions"


def annotations_from_pairs(pairs: Iterable[PreferencePair], source: str = "") -> Annotations:
    """One annotation per judged pair: label ``"first"``, ``"second"`` or ``"tie"``.

    Pairs need ``rater_id`` and ``item_id``. The label names a *response*, not a screen
    position: the two responses of an item are put in one fixed order for every rater (the
    source's own order where it has one, as PandaLM's response1/response2; else by their
    text), and "first" means that rater chose the first of them. (The platform shows each
    rater the pair in a random order, so the position a rater clicked is not comparable
    across raters; the position effect belongs to the bias profile.)
    """
    rows = []
    for n, p in enumerate(pairs):
        if p.rater_id is None or p.item_id is None:
            raise InputError(
                f"{p.source or f'pair {n}'}: no rater_id or item_id; agreement needs several"
                " raters' judgments of the same item"
            )
        if p.tie:
            label = "tie"
        else:
            first = _source_first(p) or ("chosen" if p.chosen <= p.rejected else "rejected")
            label = "first" if first == "chosen" else "second"
        rows.append((p.item_id, p.rater_id, label))
    return Annotations(annotation_table(rows), source=source)


def _source_first(pair: PreferencePair) -> str | None:
    """``"chosen"``/``"rejected"``: which response the source lists first for every rater."""
    votes = (pair.meta or {}).get("votes")
    if isinstance(votes, dict) and votes.get(pair.rater_id) in (0, 1, 2):
        return "rejected" if votes[pair.rater_id] == 2 else "chosen"
    return None


def annotations_from_examples(
    examples: Iterable[Example],
    rater_keys: Sequence[str],
    gold_key: str | None = None,
    source: str = "",
) -> Annotations:
    """Annotations from labelled examples whose ``labels[key]`` for each key in ``rater_keys``
    is one rater's label (XSTest: annotation_1, annotation_2); ``labels[gold_key]`` is gold."""
    rows, gold = [], {}
    for n, ex in enumerate(examples):
        item = ex.item_id if ex.item_id is not None else n
        for key in rater_keys:
            if ex.labels.get(key) not in (None, ""):
                rows.append((item, key, ex.labels[key]))
        if gold_key and ex.labels.get(gold_key) not in (None, ""):
            gold[item] = ex.labels[gold_key]
    return Annotations(annotation_table(rows), gold=gold, source=source)


def _load_generic(path: Path) -> Annotations:
    from rlhfkit.data.files import head_bytes, iter_csv_rows, iter_json_lines

    is_json = head_bytes(path).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")
    records = iter_json_lines(path) if is_json else iter_csv_rows(path)
    rows, gold = [], {}
    for line, rec in records:
        missing = [c for c in COLUMNS if rec.get(c) in (None, "")]
        if missing:
            raise InputError(
                f"{path}:{line}: missing {', '.join(missing)}; expected {', '.join(COLUMNS)}"
            )
        rows.append((rec["item_id"], rec["rater_id"], rec["label"]))
        if rec.get("gold") not in (None, ""):
            gold[rec["item_id"]] = rec["gold"]
    return Annotations(annotation_table(rows), gold=gold, source=f"{path} (annotations)")


def audit_agreement(path: str | Path, format: str | None = None, **options: Any) -> dict[str, Any]:
    """``rlhfkit audit agreement``: :func:`agreement_report` of a file.

    Example::

        >>> audit_agreement("testset-v1.json")["krippendorff_alpha"]  # doctest: +SKIP
        0.8642...
    """
    return agreement_report(load_annotations(path, format), **options)


def format_agreement(report: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`agreement_report`'s output."""

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        f"source              {report['source']}",
        f"annotations         {report['n_annotations']} by {report['n_raters']} raters on"
        f" {report['n_items']} items ({report['n_multi_rated_items']} rated 2+ times)",
        f"percent agreement   {num(report['percent_agreement'])}"
        f" (unanimous items: {report['unanimous_items']})",
        f"Fleiss' kappa       {num(report['fleiss_kappa'])}",
        f"Krippendorff alpha  {num(report['krippendorff_alpha'])} (nominal)",
        f"Dawid-Skene         agrees with majority vote on"
        f" {num(report['dawid_skene']['agreement_with_majority'])} of"
        f" {report['dawid_skene']['majority_items']} items",
    ]
    for pair in report["cohen_kappa"][:10]:
        lines.append(
            f"Cohen's kappa       {pair['rater_a']} / {pair['rater_b']}: {num(pair['kappa'])}"
            f" on {pair['n_items']} items (raw {num(pair['agreement'])})"
        )
    lines.append("rater               items  peer-agree  loo-majority  DS-trust  flagged")
    for r in report["per_rater"]:
        lines.append(
            f"  {str(r['rater_id'])[:16]:16s} {r['n_items']:6d}  {num(r['peer_agreement']):>10s}"
            f"  {num(r['loo_majority_agreement']):>12s}  {num(r['ds_trust']):>8s}"
            f"  {'YES' if r['flagged'] else ''}"
        )
    lines.append("label               count  kappa  specific-agreement")
    for lab in report["per_label"]:
        lines.append(
            f"  {str(lab['label'])[:16]:16s} {lab['count']:6d}  {num(lab['kappa'])}"
            f"  {num(lab['specific_agreement'])}"
        )
    for g in report.get("gold_accuracy", []):
        lines.append(f"gold accuracy       {g['rater_id']}: {num(g['accuracy'])} of {g['n_gold']}")
    lines.append(f"flag rule           {report['flag_rule']}")
    return "\n".join(lines)
