"""Who the raters were and what their choices rewarded, from the store or from the judged file.

With a store (``--database-url``), the figures come from its tables through the store's own
query functions: pay and effective hourly rate (ledger), time per task, agreement and gold
accuracy (judgments, items), self-described groups (users, only where consent was given). Without
one, agreement, trust and the bias profile are computed from the preference file the reward model
was trained on, when it is still there with the hash the run recorded.

Example::

    engine = open_store_readonly("sqlite:///rlhfkit.db")
    store_rater_figures(engine, project_id, raters_section, bias_section)
"""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, inspect, select
from sqlalchemy.engine import make_url

from rlhfkit.data.records import PreferencePair
from rlhfkit.errors import InputError
from rlhfkit.report.data import MAX_NAME, Fact, Plot, Section, Series, Table, clip

MAX_PAIRS = 20_000
"""Judged pairs read from a file for agreement and bias (the first ones; enough for tight
intervals, quick on two cores)."""


# --- the store ----------------------------------------------------------------------------------


def open_store_readonly(url: str) -> tuple[Engine, str]:
    """An engine on an existing rlhfkit store and its URL with the password hidden.

    Unlike :func:`rlhfkit.store.migrate.open_store` this creates and migrates nothing: a report
    must not change the database it describes.
    """
    from rlhfkit.store.engine import make_engine

    shown = make_url(url).render_as_string(hide_password=True) if "://" in url else url
    engine = make_engine(url)
    database = engine.url.database
    in_file = engine.dialect.name == "sqlite" and database and database != ":memory:"
    if in_file and not Path(database).is_file():
        raise InputError(f"{shown}: no such database file; expected an rlhfkit store")
    try:
        ok = inspect(engine).has_table("projects")
    except Exception as exc:  # connection refused, bad credentials, not a database file
        raise InputError(f"{shown}: cannot open the store ({exc.__class__.__name__})") from None
    if not ok:
        raise InputError(
            f"{shown}: not an rlhfkit store (no projects table); expected one that"
            " `rlhfkit db upgrade` created"
        )
    return engine, shown


def choose_project(engine: Engine, ref: str | None) -> int | None:
    """The project named by ``ref`` (id or name), the only project, or None in an empty store."""
    from rlhfkit.store.projects import list_projects, resolve_project

    if ref:
        return resolve_project(engine, ref)
    projects = list_projects(engine)
    if len(projects) > 1:
        names = ", ".join(clip(p["name"], 40) for p in projects[:10])
        raise InputError(
            f"--project: the store holds {len(projects)} projects ({names}); name one by id or name"
        )
    return projects[0]["id"] if projects else None


def _annotations(engine: Engine, project_id: int):
    """The project's comparison choices as an annotation table, with gold answers."""
    from rlhfkit.raters.quality import Annotations, annotation_table
    from rlhfkit.store.engine import reading
    from rlhfkit.store.queue import project_judgments
    from rlhfkit.store.schema import items

    rows = [
        (j["item_id"], j["rater_id"], j["choice"])
        for j in project_judgments(engine, project_id)
        if j["choice"] is not None
    ]
    with reading(engine) as conn:
        gold = dict(
            conn.execute(
                select(items.c.id, items.c.gold_answer).where(
                    items.c.project_id == project_id, items.c.gold_answer.is_not(None)
                )
            ).all()
        )
    return Annotations(annotation_table(rows), gold=gold, source="store:judgments")


def store_rater_figures(
    engine: Engine, project_id: int, raters: Section, bias: Section, scorers=()
) -> None:
    """Fill the raters and bias sections from one project of the store."""
    from rlhfkit.store.ledger import hourly_cents, pay_summary
    from rlhfkit.store.projects import get_project, progress
    from rlhfkit.store.queue import project_judgments
    from rlhfkit.store.schema import PROFILE_FIELDS
    from rlhfkit.store.stats import group_shares, rater_stats

    project = get_project(engine, project_id)
    prog = progress(engine, project_id)
    stats = rater_stats(engine, project_id)
    pay = {r["rater_id"]: r for r in pay_summary(engine, project_id=project_id)}
    times = [j["time_on_task_ms"] for j in project_judgments(engine, project_id)]
    total_cents = sum(r["total_cents"] for r in pay.values())
    total_ms = sum(times)
    below = sum(1 for r in pay.values() if r["below_minimum"])
    raters.facts += [
        Fact("project", clip(project["name"], MAX_NAME), "store:projects"),
        Fact("raters who judged", len(stats), "store:judgments"),
        Fact("judgments", prog["judgments"], "store:judgments"),
        Fact("items (of them gold)", f"{prog['items']} ({prog['gold_items']})", "store:items"),
        Fact("judgments per item (overlap k)", project["overlap_k"], "store:projects"),
        Fact("pay per comparison", project["pay_per_comparison_cents"], "store:projects", "cents"),
        Fact("total paid", total_cents, "store:ledger", "cents"),
        Fact("total time on task", total_ms / 1000, "store:judgments", "s"),
        Fact(
            "median time per task",
            statistics.median(times) / 1000 if times else None,
            "store:judgments",
            "s",
        ),
        Fact(
            "effective hourly rate (all pay / all time)",
            hourly_cents(total_cents, total_ms),
            "store:ledger,judgments",
            "cents/h",
        ),
        Fact(
            "minimum hourly wage set", project["min_hourly_wage_cents"], "store:projects", "cents/h"
        ),
        Fact("raters paid below it", below, "store:ledger,judgments"),
    ]
    quality = _agreement(_annotations(engine, project_id), raters, "store:judgments")
    trust = {r["rater_id"]: r for r in quality.get("per_rater", [])}
    rows = []
    for s in stats:
        p = pay.get(s["rater_id"], {})
        q = trust.get(s["rater_id"], {})
        rows.append(
            [
                clip(s["username"], MAX_NAME),
                s["judgments"],
                Fact("median s", s["median_ms"] / 1000, "store:judgments", "s"),
                Fact("earned", p.get("total_cents"), "store:ledger", "cents"),
                Fact("hourly", p.get("hourly_cents"), "store:ledger,judgments", "cents/h"),
                Fact("agreement", s["agreement"], "store:judgments", "%"),
                Fact("gold", s["gold_accuracy"], "store:judgments,items", "%"),
                s["gold_seen"],
                Fact("trust", q.get("ds_trust"), "store:judgments", "%"),
                ", ".join(s["flags"] + (["flagged (agreement)"] if q.get("flagged") else [])),
            ]
        )
    if rows:
        raters.tables.append(
            Table(
                "Per rater",
                [
                    "rater",
                    "judgments",
                    "median time",
                    "earned",
                    "hourly rate",
                    "agreement",
                    "gold accuracy",
                    "gold seen",
                    "Dawid-Skene trust",
                    "flags",
                ],
                rows,
                "store:judgments",
                "Agreement: share of the other raters of the same items who chose the same;"
                " trust: Dawid-Skene expected accuracy.",
            )
        )
    groups = []
    for attribute in PROFILE_FIELDS:
        shares = group_shares(engine, project_id, attribute)
        if any(g != "undisclosed" for g in shares):
            groups += [
                [attribute, clip(g, MAX_NAME), Fact(g, v, "store:users,judgments", "%")]
                for g, v in shares.items()
            ]
    if groups:
        raters.tables.append(
            Table(
                "Self-described groups (share of judgments)",
                ["attribute", "group", "share"],
                groups,
                "store:users",
                "Only raters who consented gave these; the rest count as undisclosed.",
            )
        )
    else:
        raters.notes.append("no rater described themselves (demographic tags not given)")
    _bias(_store_pairs(engine, project_id), bias, "store:judgments", scorers)


def _store_pairs(engine: Engine, project_id: int) -> list[PreferencePair]:
    """The exported pairs, with which response each rater saw first (from the judgment)."""
    from rlhfkit.store.export import preference_pairs
    from rlhfkit.store.queue import project_judgments

    choice = {
        j["id"]: (j["choice"], j["shown_order"]) for j in project_judgments(engine, project_id)
    }
    pairs = preference_pairs(engine, project_id)
    for p in pairs:
        jid = int(str(p.source).rsplit("/", 1)[-1])
        chosen_side, order = choice[jid]
        p.meta["shown_first"] = "chosen" if order[:1] == chosen_side else "rejected"
    return pairs


# --- a judged file ------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_pairs(
    entry: dict[str, Any], run: Path, notes: list[str]
) -> tuple[list[PreferencePair], str] | None:
    """The judged pairs of a run's ``data`` input when the file still has its recorded hash."""
    from rlhfkit.raters.bias import load_pairs
    from rlhfkit.report.runs import display_path, resolve_input

    path = resolve_input(str(entry["path"]), run) if entry.get("path") else None
    if path is None:
        notes.append(
            f"training data {clip(entry.get('path') or entry.get('name'), 200)} is not"
            " on this machine: agreement and bias computed from it are not available"
        )
        return None
    if entry.get("sha256") and sha256_of(path) != entry["sha256"]:
        notes.append(
            f"{path} changed since training (sha256 differs from the run's record):"
            " its agreement and bias are not shown"
        )
        return None
    pairs = load_pairs(path)[:MAX_PAIRS]
    return pairs, display_path(path)


def file_rater_figures(
    pairs: list[PreferencePair], path: str, raters: Section, bias: Section, scorers=()
) -> None:
    """Agreement (when items were judged by several raters) and the bias profile of a file."""
    from rlhfkit.raters.quality import annotations_from_pairs

    if all(p.rater_id is not None and p.item_id is not None for p in pairs):
        _agreement(annotations_from_pairs(pairs, source=path), raters, path)
    else:
        raters.notes.append(
            f"{path}: pairs do not name both rater and item: agreement between raters not available"
        )
    _bias(pairs, bias, path, scorers)


# --- shared -------------------------------------------------------------------------------------


def _agreement(annotations, section: Section, source: str) -> dict[str, Any]:
    """Pool agreement facts and a per-rater trust lookup (empty when nothing was multi-rated)."""
    from rlhfkit.raters.quality import agreement_report

    if annotations.table.empty:
        section.notes.append("no comparison judgments: agreement not available")
        return {}
    try:
        report = agreement_report(annotations)
    except (InputError, ValueError, ZeroDivisionError) as exc:
        section.notes.append(f"agreement could not be computed ({clip(exc, 200)})")
        return {}
    if not report["n_multi_rated_items"]:
        section.notes.append("no item was judged by two raters: agreement not available")
        return {}
    pre = source if source.startswith("store:") else f"{source}#"
    key = (lambda k: pre) if source.startswith("store:") else (lambda k: f"{pre}{k}")
    section.facts += [
        Fact("items judged by 2+ raters", report["n_multi_rated_items"], key("items")),
        Fact("percent agreement", report["percent_agreement"], key("agreement"), "%"),
        Fact("Fleiss' kappa", report["fleiss_kappa"], key("fleiss_kappa")),
        Fact("Krippendorff's alpha", report["krippendorff_alpha"], key("krippendorff_alpha")),
        Fact("raters flagged far below the pool", len(report["flagged_raters"]), key("flagged")),
    ]
    pool_gold = [g for g in report.get("gold_accuracy", []) if g["rater_id"] == "(pool)"]
    if pool_gold and pool_gold[0]["n_gold"]:
        section.facts.append(
            Fact("gold accuracy (pool)", pool_gold[0]["accuracy"], key("gold"), "%")
        )
    if not source.startswith("store:"):
        section.tables.append(
            Table(
                "Per rater (from the judged file)",
                ["rater", "items", "peer agreement", "Dawid-Skene trust", "flagged"],
                [
                    [
                        clip(r["rater_id"], MAX_NAME),
                        r["n_items"],
                        Fact("agreement", r["peer_agreement"], key("peer_agreement"), "%"),
                        Fact("trust", r["ds_trust"], key("ds_trust"), "%"),
                        "yes" if r["flagged"] else "",
                    ]
                    for r in report["per_rater"]
                ],
                source,
            )
        )
    section.notes.append(
        "realistic raw agreement on open-ended comparisons is 63-77 % (InstructGPT, HH,"
        " AlpacaFarm, MT-Bench); far above it on hard items may mean copying"
    )
    return report


def _bias(pairs: list[PreferencePair], section: Section, source: str, scorers) -> None:
    from rlhfkit.raters.bias import bias_profiles, personality_scorers

    decided = [p for p in pairs if not p.tie]
    if len(decided) < 10:
        section.notes.append(
            f"{len(decided)} decided judgments: too few for a bias profile (10 or more needed)"
        )
        return
    try:
        out = bias_profiles(pairs, scorers=personality_scorers(scorers), min_judgments=30)
    except (InputError, ValueError, np.linalg.LinAlgError) as exc:
        section.notes.append(f"bias profile could not be fitted ({clip(exc, 200)})")
        return
    pool = out["pool"]
    pre = source if source.startswith("store:") else f"{source}#"

    def src(k: str) -> str:
        return pre if source.startswith("store:") else f"{pre}{k}"

    section.facts += [
        Fact("decided judgments in the fit", pool.n_judgments, src("judgments")),
        Fact("ties left out", pool.n_ties, src("ties")),
        Fact("presentation order recorded", "yes" if pool.position_known else "no", src("order")),
    ]
    share = pool.longer_chosen
    if share.get("n"):
        section.facts.append(Fact("longer response chosen", share["share"], src("longer"), "%"))
    names = list(pool.coefficients)
    rows = []
    for name, c in pool.coefficients.items():
        rows.append(
            [
                name,
                Fact(name, c.estimate, src(f"coefficients.{name}")),
                Fact("low", c.ci_low, src(f"coefficients.{name}")),
                Fact("high", c.ci_high, src(f"coefficients.{name}")),
                Fact("p", c.p_value, src(f"coefficients.{name}")),
                # position is an intercept (always 1): its typical effect is the estimate
                Fact(
                    "typical",
                    c.estimate if name == "position" else c.estimate * c.diff_sd,
                    src(f"coefficients.{name}"),
                ),
            ]
        )
    section.tables.append(
        Table(
            "What the pool's choices rewarded (log-odds of choosing a response)",
            [
                "attribute",
                "coefficient",
                "95% low",
                "95% high",
                "p",
                "effect of a typical difference",
            ],
            rows,
            source,
            "length: log(1 + words), so doubling a reply multiplies the odds by 2^coefficient;"
            " position: the first-shown response's advantage whatever it says."
            + ("" if pool.converged else " The fit did not converge."),
        )
    )
    section.plots.append(
        Plot(
            "Bias profile of the pool (95% intervals)",
            "log-odds of being chosen",
            "",
            [Series("pool", [pool.coefficients[n].estimate for n in names], [], source)],
            kind="interval",
            categories=names,
            low=[pool.coefficients[n].ci_low for n in names],
            high=[pool.coefficients[n].ci_high for n in names],
        )
    )
    per_rater = out["raters"]
    if per_rater:
        rows = []
        for rid, prof in per_rater.items():
            length = prof.coefficients.get("length")
            position = prof.coefficients.get("position")
            rows.append(
                [
                    clip(rid, MAX_NAME),
                    prof.n_judgments,
                    Fact("length", length.estimate if length else None, src("length")),
                    Fact("position", position.estimate if position else None, src("position")),
                ]
            )
        section.tables.append(
            Table(
                "Per rater (30+ decided judgments)",
                ["rater", "judgments", "length", "position"],
                rows,
                source,
            )
        )
