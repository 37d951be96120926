"""Collect everything the transparency report shows from run directories and, optionally, the store.

Example::

    data = build_report(["runs/ppo"], database_url="sqlite:///rlhfkit.db", project="round-1")
    data.section("reward_model").facts[0]      # Fact(label='held-out accuracy', value=0.71,
                                               #      source='runs/rm/eval.json#heldout.accuracy')

Every section is always present; what a run did not record becomes a note ("not recorded for
this run"), never an error. Bad files (a directory that is not a run, a corrupt
``metrics.jsonl`` line, a corrupt ``provenance.json``) raise ``InputError`` with ``PATH:LINE``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfkit.errors import InputError
from rlhfkit.report import raters as rater_figures
from rlhfkit.report.data import (
    MAX_NAME,
    Fact,
    Plot,
    ReportData,
    Sample,
    Section,
    Series,
    Table,
    clip,
    flatten,
)
from rlhfkit.report.runs import Link, RunDir, collect_runs, lineage, resolve_input

SECTIONS = [
    ("overview", "How this model was made"),
    ("demonstrations", "The demonstrations it imitated"),
    ("raters", "Who judged its answers"),
    ("bias", "What the raters' choices rewarded"),
    ("reward_model", "What the reward model rewards"),
    ("personality", "The personality it was trained for"),
    ("training", "Training curves"),
    ("refusals", "Refusals and the helpful-harmless trade-off"),
    ("samples", "Replies before and after"),
]

CURVES = {
    "ppo": ["objective/scores", "objective/kl", "response/length", "objective/rlhf_reward"],
    "rloo": ["objective/scores", "objective/kl", "response/length", "objective/rlhf_reward"],
    "reward": ["train/loss", "train/accuracy"],
    "sft": ["train/loss"],
}
"""Metrics plotted per run kind; other kinds get their first train/ and objective/ metrics."""

PREFERENCE_KINDS = ("reward", "dpo", "kto")
"""Runs trained directly on people's (or a labeler's) judgments."""

NOT_RECORDED = "not recorded for this run"
STORE_SOURCE = re.compile(r"rlhfkit-store:project/(\d+)/")
MAX_POINTS = 400
"""Points per plotted curve (longer runs are thinned evenly)."""


def build_report(
    runs: Sequence[str | Path],
    *,
    database_url: str | None = None,
    project: str | None = None,
    scorers: Sequence[str] = (),
) -> ReportData:
    """Read the runs (and their parents) and the store into a :class:`ReportData`.

    ``scorers`` adds personality attributes (refusal, hedging, ...) to the bias profile.

    Example::

        >>> data = build_report(["runs/ppo"])  # doctest: +SKIP
        >>> [s.key for s in data.sections][:3]  # doctest: +SKIP
        ['overview', 'demonstrations', 'raters']
    """
    found, links, chain_notes = collect_runs(list(runs))
    sections = {key: Section(key, title) for key, title in SECTIONS}
    final = found[0]
    _overview(final, found, links, chain_notes, sections["overview"])
    _demonstrations(final, found, links, sections["demonstrations"])
    shown_store = None
    if database_url:
        engine, shown_store = rater_figures.open_store_readonly(database_url)
        pid = _project_of_data(found, engine, sections["raters"]) if project is None else None
        pid = pid if pid is not None else rater_figures.choose_project(engine, project)
        if pid is None:
            sections["raters"].notes.append(f"{shown_store}: the store holds no project")
        else:
            rater_figures.store_rater_figures(
                engine, pid, sections["raters"], sections["bias"], scorers
            )
        engine.dispose()
    _preference_runs(found, sections["raters"], sections["bias"], scorers, bool(database_url))
    _reward_model(found, sections["reward_model"])
    _personality(found, sections["personality"])
    for run in found:
        _curves(run, sections["training"])
    _refusals(found, sections["refusals"])
    _gold(final, sections["samples"])
    _samples(final, sections["samples"])
    for s in sections.values():
        if s.empty and not s.notes:
            s.notes.append(NOT_RECORDED)
    return ReportData(
        title=f"How {final.name} was trained",
        runs=[r.name for r in found],
        store=shown_store,
        sections=list(sections.values()),
    )


def _project_of_data(found: list[RunDir], engine, section: Section) -> int | None:
    """The store project whose export a run was trained on (``rlhfkit export preferences``
    writes ``source: rlhfkit-store:project/N/judgment/M`` into every record)."""
    from rlhfkit.store.errors import NotFound
    from rlhfkit.store.projects import resolve_project

    for run in found:
        recorded = run.inputs.get("data", {}).get("path") if run.kind in PREFERENCE_KINDS else None
        path = resolve_input(str(recorded), run.path) if recorded else None
        if path is None:
            continue
        try:
            with open(path, encoding="utf-8") as fh:
                match = STORE_SOURCE.search(fh.read(4096))
        except (OSError, UnicodeDecodeError):
            continue
        if match is None:
            continue
        try:
            pid = resolve_project(engine, int(match.group(1)))
        except NotFound:
            continue
        section.notes.append(
            f"store project {pid} found from the sources of {clip(recorded, 300)} ({run.name})"
        )
        return pid
    return None


# --- sections -----------------------------------------------------------------------------------


def _input_label(entry: dict[str, Any]) -> str:
    return clip(entry.get("name") or entry.get("path") or "?", 300)


def _overview(final: RunDir, found, links: list[Link], notes, section: Section) -> None:
    chain = lineage(final, links)
    root = chain[-1]
    base_key = next((k for k in ("model", "policy") if k in root.inputs), None)
    if base_key:
        section.facts.append(
            Fact(
                "base model",
                _input_label(root.inputs[base_key]),
                root.source("provenance.json", f"inputs.{base_key}"),
            )
        )
    else:
        section.notes.append(f"base model {NOT_RECORDED} ({root.name} names no model input)")
    section.facts.append(
        Fact("final training step", final.kind, final.source("provenance.json", "kind"))
    )
    if "created" in final.provenance:
        section.facts.append(
            Fact(
                "trained on",
                final.provenance["created"],
                final.source("provenance.json", "created"),
            )
        )
    if "code_version" in final.provenance:
        section.facts.append(
            Fact(
                "code",
                final.provenance["code_version"],
                final.source("provenance.json", "code_version"),
            )
        )
    rows = []
    for run in found:
        used = [f"{lk.name} of {lk.child.name}" for lk in links if lk.parent is run]
        rows.append(
            [
                clip(run.name, 300),
                Fact("kind", run.kind, run.source("provenance.json", "kind")),
                Fact(
                    "created",
                    run.provenance.get("created"),
                    run.source("provenance.json", "created"),
                ),
                Fact("steps", len(run.metrics), run.source("metrics.jsonl")),
                clip(", ".join(used) or "(the run named)", 300),
            ]
        )
    section.tables.append(
        Table(
            "The runs, last first",
            ["run", "kind", "created", "logged steps", "used as"],
            rows,
            final.source("provenance.json", "inputs"),
        )
    )
    section.notes += notes


def _demonstrations(final: RunDir, found, links, section: Section) -> None:
    sft_runs = [r for r in found if r.kind == "sft"]
    if not sft_runs:
        section.notes.append(
            f"no supervised fine-tuning run in this chain: demonstrations {NOT_RECORDED}"
        )
        return
    for run in sft_runs:
        data = run.inputs.get("data", {})
        section.facts += [
            Fact(
                "demonstrations file",
                _input_label(data),
                run.source("provenance.json", "inputs.data.path"),
            ),
            Fact("sha256", data.get("sha256"), run.source("provenance.json", "inputs.data.sha256")),
            Fact("bytes", data.get("bytes"), run.source("provenance.json", "inputs.data.bytes")),
            Fact(
                "demonstrations",
                run.provenance.get("examples"),
                run.source("provenance.json", "examples"),
            ),
        ]
        summary = _mapping(run.provenance.get("raters"))
        if summary.get("raters"):
            section.facts.append(
                Fact(
                    "written by (raters)",
                    summary["raters"],
                    run.source("provenance.json", "raters.raters"),
                )
            )


def _preference_runs(found, raters: Section, bias: Section, scorers, done: bool) -> None:
    pref = [r for r in found if r.kind in PREFERENCE_KINDS]
    if not pref:
        raters.notes.append(f"no run in this chain was trained on judgments: raters {NOT_RECORDED}")
    for run in pref:
        summary = _mapping(run.provenance.get("raters"))
        data = run.inputs.get("data", {})
        raters.facts.append(
            Fact(
                f"judgments file ({run.kind} run)",
                _input_label(data),
                run.source("provenance.json", "inputs.data.path"),
            )
        )
        for key, label in (("pairs", "pairs"), ("examples", "examples")):
            if key in run.provenance:
                raters.facts.append(
                    Fact(
                        f"{label} trained on",
                        run.provenance[key],
                        run.source("provenance.json", key),
                    )
                )
        if summary.get("raters"):
            raters.facts += [
                Fact(
                    "raters named in the data",
                    summary["raters"],
                    run.source("provenance.json", "raters.raters"),
                ),
                Fact(
                    "judgments with a rater",
                    summary.get("judgments"),
                    run.source("provenance.json", "raters.judgments"),
                ),
                Fact(
                    "share of the busiest rater",
                    summary.get("top_rater_share"),
                    run.source("provenance.json", "raters.top_rater_share"),
                    "%",
                ),
            ]
        else:
            raters.notes.append(
                f"{run.source('provenance.json', 'raters')}: the data names no raters"
            )
        for key in ("constitution", "rater_pool", "labeler"):
            value = run.provenance.get(key, run.config.get(key))
            if value:
                where = "provenance.json" if key in run.provenance else "config.yaml"
                raters.tables.append(
                    _flat_table(f"{key.replace('_', ' ')} ({run.name})", value, run, where, key)
                )
        if done or run.kind == "kto":
            continue  # the store's figures are the richer ones; unpaired data has no pairs
        got = rater_figures.file_pairs(data, run.path, raters.notes)
        if got is not None:
            rater_figures.file_rater_figures(*got, raters, bias, scorers)
            done = True  # one judged file is enough (the runs of a chain share it)


def _reward_model(found, section: Section) -> None:
    reward_runs = [r for r in found if r.kind == "reward"]
    if not reward_runs:
        section.notes.append(f"no reward-model run in this chain: {NOT_RECORDED}")
    for run in reward_runs:
        heads = run.provenance.get("heads")
        if isinstance(heads, list) and heads:
            section.facts.append(
                Fact(
                    "heads (attributes)",
                    ", ".join(map(str, heads))[:300],
                    run.source("provenance.json", "heads"),
                )
            )
        ev = run.evaluation or {}
        for split in ("heldout", "eval_data"):
            res = ev.get(split)
            if not isinstance(res, dict):
                continue
            name = "held-out" if split == "heldout" else "extra evaluation"
            section.facts += [
                Fact(f"{name} {label}", res.get(k), run.source("eval.json", f"{split}.{k}"), unit)
                for k, label, unit in (
                    ("accuracy", "accuracy", "%"),
                    ("n", "pairs", ""),
                    ("mean_margin", "mean margin", ""),
                    ("ece", "calibration error (ECE)", ""),
                )
            ]
        if not ev:
            section.notes.append(f"{run.source('eval.json')}: evaluation {NOT_RECORDED}")
        last = next((m for m in reversed(run.metrics) if "train/accuracy" in m), None)
        if last is not None:
            section.facts.append(
                Fact(
                    "final training accuracy",
                    last["train/accuracy"],
                    run.source("metrics.jsonl", "train/accuracy"),
                    "%",
                )
            )
        for key in ("attributes", "coefficients", "probe"):
            if isinstance(ev.get(key), dict):
                section.tables.append(
                    _flat_table(f"attribute {key}", ev[key], run, "eval.json", key)
                )
    for run in found:
        norm = run.provenance.get("reward_normalization")
        if isinstance(norm, dict) and norm:
            section.facts += [
                Fact(
                    f"reward offset used by {run.kind}",
                    _first(norm.get("offset")),
                    run.source("provenance.json", "reward_normalization.offset"),
                ),
                Fact(
                    f"reward scale used by {run.kind}",
                    _first(norm.get("scale")),
                    run.source("provenance.json", "reward_normalization.scale"),
                ),
            ]
        if "propagation.json" in run.extras:
            section.tables += _propagation(run, run.extras["propagation.json"])


PROPAGATION_STAGES = ("raters", "reward_model", "policy")


def _propagation(run: RunDir, report: dict[str, Any]) -> list[Table]:
    """``rlhfkit audit propagation``'s result: one row per attribute, one column per stage
    (estimate and 95 % interval); any other layout is shown key by key."""
    audited = report.get("runs")
    if not isinstance(audited, list) or not all(
        isinstance(r, dict) and isinstance(r.get("stages"), dict) for r in audited
    ):
        return [_flat_table("propagation audit", report, run, "propagation.json", "")]
    tables = []
    for i, entry in enumerate(audited):
        stages = entry["stages"]
        attributes = sorted({a for st in stages.values() if isinstance(st, dict) for a in st})
        rows = []
        for attribute in attributes:
            row: list[Any] = [clip(attribute, MAX_NAME)]
            for stage in PROPAGATION_STAGES:
                est = _mapping(_mapping(stages.get(stage)).get(attribute))
                key = f"runs[{i}].stages.{stage}.{attribute}"
                for field in ("estimate", "ci_low", "ci_high"):
                    row.append(Fact(field, est.get(field), run.source("propagation.json", key)))
            rows.append(row)
        columns = ["attribute"]
        for stage in PROPAGATION_STAGES:
            columns += [stage.replace("_", " "), "95% low", "95% high"]
        tables.append(
            Table(
                f"Propagation audit of {clip(entry.get('run'), 300)}",
                columns,
                rows,
                run.source("propagation.json", f"runs[{i}]"),
                "raters: log-odds per unit of attribute difference; reward model: reward"
                " difference per unit on probe pairs; policy: mean attribute shift from the"
                " reference policy's replies.",
            )
        )
    tables += _policy_contrasts(run, report.get("policy_contrasts"))
    return tables


def _policy_contrasts(run: RunDir, contrasts: Any) -> list[Table]:
    """The audit's paired policy contrasts (a later run's replies minus the first sampled
    run's, prompt by prompt): one row per run and attribute."""
    if not isinstance(contrasts, list):
        return []
    rows = []
    for i, entry in enumerate(contrasts):
        if not isinstance(entry, dict):
            continue
        attributes = _mapping(entry.get("attributes"))
        for attribute in sorted(attributes):
            est = _mapping(attributes[attribute])
            src = run.source("propagation.json", f"policy_contrasts[{i}].attributes.{attribute}")
            rows.append(
                [clip(entry.get("run"), MAX_NAME), clip(entry.get("minus"), MAX_NAME),
                 clip(attribute, MAX_NAME)]
                + [Fact(field, est.get(field), src) for field in ("estimate", "ci_low", "ci_high")]
            )  # fmt: skip
    if not rows:
        return []
    return [
        Table(
            "Policy contrasts, paired over held-out prompts",
            ["run", "minus", "attribute", "difference", "95% low", "95% high"],
            rows,
            run.source("propagation.json", "policy_contrasts"),
            "Runs sampled alike met the same prompts and random numbers: their replies are"
            " compared prompt by prompt (paired t-interval), so the reference's sampling noise"
            " cancels.",
        )
    ]


def _personality(found, section: Section) -> None:
    from rlhfkit.personality.spec import load_spec, parse_spec

    for run in found:
        for where, holder in (("provenance.json", run.provenance), ("config.yaml", run.config)):
            key = next((k for k in ("personality", "spec") if holder.get(k)), None)
            if key is None:
                continue
            value = holder[key]
            src = run.source(where, key)
            try:
                if isinstance(value, dict):
                    import yaml

                    spec = parse_spec(yaml.safe_dump(value), source=src)
                else:
                    spec = load_spec(str(value))
            except InputError as exc:
                section.notes.append(
                    f"{src}: spec {clip(value, MAX_NAME)!s} could not be read ({clip(exc, 300)})"
                )
                break
            section.facts += [
                Fact("personality", clip(spec.name, MAX_NAME), src),
                Fact("described as", clip(spec.description, 500), src),
                Fact("KL budget (nats per reply)", spec.kl_budget, src),
            ]
            section.tables.append(
                Table(
                    f"Reward weights ({run.name})",
                    ["term", "weight"],
                    [[clip(t, MAX_NAME), w] for t, w in spec.weights.items()],
                    src,
                    "Reward = sum of weight x (score - 0.5) / spread, the spread being each"
                    " term's standard deviation among the starting policy's replies (units: sd,"
                    f" the default) or 1 (units: score); this spec: units {spec.units}."
                    " Positive rewards more of it.",
                )
            )
            break
    if section.empty and not section.notes:
        section.notes.append(
            f"personality spec {NOT_RECORDED}: the reward is the reward model's preference head"
        )


def _thin(rows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(rows) <= MAX_POINTS:
        return rows
    step = len(rows) / MAX_POINTS
    picked = [rows[int(i * step)] for i in range(MAX_POINTS)]
    return picked[:-1] + [rows[-1]]


def _curves(run: RunDir, section: Section) -> None:
    if not run.metrics:
        section.notes.append(f"{run.source('metrics.jsonl')}: metrics {NOT_RECORDED}")
        return
    keys = CURVES.get(run.kind)
    present = {k for m in run.metrics for k in m}
    if keys is None:
        keys = sorted(
            k
            for k in present
            if k.split("/")[0] in ("train", "objective", "response")
            and not k.endswith(("lr", "grad_norm", "tokens"))
        )[:4]
    rows = []
    for key in [k for k in keys if k in present]:
        points = [
            (float(_number(m.get("step"), i + 1)), float(m[key]))
            for i, m in enumerate(run.metrics)
            if isinstance(m.get(key), (int, float)) and not isinstance(m.get(key), bool)
        ]
        if not points:
            continue
        src = run.source("metrics.jsonl", key)
        points = _thin(points)
        section.plots.append(
            Plot(
                f"{key} ({run.kind}: {run.name})",
                "step",
                key,
                [Series(key, [x for x, _ in points], [y for _, y in points], src)],
            )
        )
        ys = [y for _, y in points]
        rows.append(
            [
                key,
                Fact("first", ys[0], src),
                Fact("last", ys[-1], src),
                Fact("min", min(ys), src),
                Fact("max", max(ys), src),
            ]
        )
    if rows:
        section.tables.append(
            Table(
                f"{run.kind}: {run.name}",
                ["metric", "first", "last", "min", "max"],
                rows,
                run.source("metrics.jsonl"),
            )
        )


def _refusals(found, section: Section) -> None:
    for run in found:
        ev = run.evaluation or {}
        picked = [(k, v) for k, v in flatten(ev) if "refus" in k.lower()]
        if picked:
            section.tables.append(
                Table(
                    f"Refusal rates ({run.name})",
                    ["key", "value"],
                    [[k, Fact(k, v, run.source("eval.json", k), "%")] for k, v in picked],
                    run.source("eval.json"),
                )
            )
        for name in ("refusal.json", "tradeoff.json"):
            if name in run.extras:
                section.tables.append(_flat_table(name, run.extras[name], run, name, ""))
    if section.empty:
        section.notes.append(
            f"refusal rates and trade-off point {NOT_RECORDED} (no refusal keys in eval.json,"
            " no refusal.json or tradeoff.json in the runs)"
        )


def _samples(final: RunDir, section: Section) -> None:
    ev = final.evaluation or {}
    before, after = ev.get("before"), ev.get("after")
    if not isinstance(before, dict) and not isinstance(after, dict):
        section.notes.append(f"{final.source('eval.json')}: before/after evaluation {NOT_RECORDED}")
        return
    before, after = _mapping(before), _mapping(after)
    keys = [k for k in {**before, **after} if not isinstance({**before, **after}[k], (dict, list))]
    rows = []
    for k in keys:
        b, a = before.get(k), after.get(k)
        change = a - b if all(isinstance(v, (int, float)) for v in (a, b)) else None
        rows.append(
            [
                k,
                Fact("before", b, final.source("eval.json", f"before.{k}")),
                Fact("after", a, final.source("eval.json", f"after.{k}")),
                Fact("change", change, final.source("eval.json", k)),
            ]
        )
    section.tables.append(
        Table(
            "Held-out prompts, greedy replies",
            ["measure", "before", "after", "change"],
            rows,
            final.source("eval.json"),
            "reward: the reward model's normalised score (0 = the starting policy's average).",
        )
    )
    b_samples = [s for s in before.get("samples") or [] if isinstance(s, dict)]
    a_samples = [s for s in after.get("samples") or [] if isinstance(s, dict)]
    for i in range(max(len(b_samples), len(a_samples))):
        b = b_samples[i] if i < len(b_samples) else {}
        a = a_samples[i] if i < len(a_samples) else {}
        section.samples.append(
            Sample(
                prompt=str(b.get("prompt") or a.get("prompt") or ""),
                before=None if "reply" not in b else str(b["reply"]),
                after=None if "reply" not in a else str(a["reply"]),
                source=final.source("eval.json", f"after.samples[{i}]"),
            )
        )


def _gold(final: RunDir, section: Section) -> None:
    """The simulated pool's true utility of the starting and final policies' replies to the
    held-out prompts (``gold.json``, written by ``rlhfkit demo``), with the last step's KL."""
    gold = final.extras.get("gold.json")
    if not isinstance(gold, dict):
        return
    rows = []
    for key, label in (("sft", "starting (SFT) policy"), ("final", "trained policy")):
        entry = _mapping(gold.get(key))
        for measure, what in (("gold", "gold reward"), ("length_words", "reply length, words")):
            m = _mapping(entry.get(measure))
            ci = m.get("ci95") if isinstance(m.get("ci95"), list) else [None, None]
            src = f"{key}.{measure}"
            rows.append(
                [
                    f"{label}: {what}",
                    Fact("mean", m.get("mean"), final.source("gold.json", f"{src}.mean")),
                    Fact("95% low", _first(ci), final.source("gold.json", f"{src}.ci95")),
                    Fact(
                        "95% high", ci[-1] if ci else None, final.source("gold.json", f"{src}.ci95")
                    ),
                    Fact("prompts", m.get("n"), final.source("gold.json", f"{src}.n")),
                ]
            )
    kl = final.metrics[-1].get("objective/kl") if final.metrics else None
    rows.append(
        [
            "KL to the reference at the last step (nats)",
            Fact(
                "mean", kl, final.source("metrics.jsonl", f"step {len(final.metrics)}.objective/kl")
            ),
            "",
            "",
            "",
        ]
    )
    section.tables.append(
        Table(
            "Gold reward on held-out prompts (the simulated rater pool's true utility)",
            ["measure", "mean", "95% low", "95% high", "prompts"],
            rows,
            final.source("gold.json"),
            "The pool's utility of greedy replies to prompts no stage trained on: what the raters"
            " would have preferred, known exactly because the raters were simulated.",
        )
    )


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is an object, else empty (a field of the wrong type is not shown)."""
    return value if isinstance(value, dict) else {}


def _number(value: Any, default: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if ok else default


def _first(value: Any) -> Any:
    """The first head's entry of a per-head list (a lone number is taken as it is)."""
    return value[0] if isinstance(value, list) and value else value


def _flat_table(title: str, value: Any, run: RunDir, file: str, key: str) -> Table:
    """A key/value table of a result whose layout the report does not know in advance."""
    if not isinstance(value, (dict, list)):
        value = {key or "value": value}
    rows = [
        [clip(k, 200), Fact(k, v, run.source(file, f"{key}.{k}" if key else k))]
        for k, v in flatten(value)
    ]
    return Table(clip(title, 200), ["key", "value"], rows, run.source(file, key))
