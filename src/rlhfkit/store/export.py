"""Export what raters produced as standard data files (training reads files, never the store).

- preferences: TRL's conversational preference jsonl (``prompt``/``chosen``/``rejected``) with
  ``rater_id``, per-response ``labels``, ``margin`` (strength), ``tie`` and ``item_id``; the
  rater's self-described groups and an optional reweighting ``weight`` sit in ``meta``;
- demonstrations: TRL's conversational prompt-completion jsonl;
- the ledger: CSV (see :mod:`rlhfkit.store.ledger`).

Example::

    n = export_preferences(engine, pid, "prefs.jsonl", target_mix=("country", {"IN": .5, "US": .5}))
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from rlhfkit.data.records import Example, PreferencePair
from rlhfkit.errors import InputError
from rlhfkit.store.engine import reading
from rlhfkit.store.projects import get_project
from rlhfkit.store.schema import PROFILE_FIELDS, items, judgments, users
from rlhfkit.store.stats import group_of


def rater_tag(rater_id: int) -> str:
    """The pseudonymous id written into exports (usernames stay in the store)."""
    return f"rater-{rater_id}"


def _rows(engine: Engine, project_id: int, task_type: str):
    get_project(engine, project_id)
    with reading(engine) as conn:
        return conn.execute(
            select(
                judgments,
                items.c.prompt,
                items.c.response_a,
                items.c.response_b,
                items.c.gold_answer,
                *[users.c[f] for f in PROFILE_FIELDS],
                users.c.profile_consent,
            )
            .join(items, items.c.id == judgments.c.item_id)
            .join(users, users.c.id == judgments.c.rater_id)
            .where(judgments.c.project_id == project_id, items.c.task_type == task_type)
            .order_by(judgments.c.id)
        ).all()


def _groups(row) -> dict[str, str]:
    return {f: group_of(row.profile_consent, getattr(row, f)) for f in PROFILE_FIELDS}


def preference_pairs(
    engine: Engine,
    project_id: int,
    *,
    include_ties: bool = False,
    target_mix: tuple[str, dict[str, float]] | None = None,
) -> list[PreferencePair]:
    """The project's comparison judgments as pairs (``both_bad`` carries no preference and is
    left out; ties only with ``include_ties``).

    ``target_mix=(attribute, {group: share})`` adds ``meta["weight"]`` so that each group of
    raters counts as the target share says: weight = target share / observed share. Groups not
    in the target get weight 0.
    """
    pairs = []
    for r in _rows(engine, project_id, "comparison"):
        if r.choice == "both_bad" or (r.choice == "tie" and not include_ties):
            continue
        chosen_side = "B" if r.choice == "B" else "A"
        other = "A" if chosen_side == "B" else "B"
        text = {"A": r.response_a, "B": r.response_b}
        labels = r.labels or {}
        pairs.append(
            PreferencePair(
                prompt=r.prompt,
                chosen=text[chosen_side],
                rejected=text[other],
                rater_id=rater_tag(r.rater_id),
                labels={"chosen": labels.get(chosen_side, {}), "rejected": labels.get(other, {})},
                margin=float(r.strength) if r.strength is not None else None,
                tie=r.choice == "tie",
                item_id=f"{project_id}-{r.item_id}",
                source=f"rlhfkit-store:project/{project_id}/judgment/{r.id}",
                meta={
                    "rater_groups": _groups(r),
                    "shown_order": r.shown_order,
                    "time_on_task_ms": r.time_on_task_ms,
                    "gold": r.gold_answer is not None,
                    "comment": r.comment,
                },
            )
        )
    if target_mix is not None:
        _reweight(pairs, *target_mix)
    return pairs


def _reweight(pairs: list[PreferencePair], attribute: str, target: dict[str, float]) -> None:
    if attribute not in PROFILE_FIELDS:
        raise InputError(f"target mix: attribute {attribute!r}, expected one of {PROFILE_FIELDS}")
    if not target or any(not isinstance(v, (int, float)) or v < 0 for v in target.values()):
        raise InputError("target mix: expected group=share pairs with shares >= 0")
    total = sum(target.values())
    if total <= 0:
        raise InputError("target mix: shares must add up to more than 0")
    observed = Counter(p.meta["rater_groups"][attribute] for p in pairs)
    missing = [g for g, share in target.items() if share > 0 and not observed[g]]
    if missing:
        raise InputError(
            f"target mix: no judgments from {attribute} group(s) {', '.join(missing)}; "
            f"present: {', '.join(sorted(observed)) or 'none'}"
        )
    n = len(pairs)
    for p in pairs:
        group = p.meta["rater_groups"][attribute]
        share = target.get(group, 0.0) / total
        p.meta["weight"] = share / (observed[group] / n)


def _write_jsonl(records: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(out)  # never a half-written export


def _pair_record(pair: PreferencePair) -> dict[str, Any]:
    try:
        from rlhfkit.data.trl import pair_record
    except ImportError:  # the data package's writer is optional for the store
        return {
            "prompt": pair.prompt,
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
            "rater_id": pair.rater_id,
            "labels": pair.labels,
            "margin": pair.margin,
            "tie": pair.tie,
            "item_id": pair.item_id,
            "source": pair.source,
            "meta": pair.meta,
        }
    return pair_record(pair)


def _example_record(example: Example) -> dict[str, Any]:
    try:
        from rlhfkit.data.trl import example_record
    except ImportError:
        return {
            "prompt": example.prompt,
            "completion": [{"role": "assistant", "content": example.completion}],
            "rater_id": example.rater_id,
            "item_id": example.item_id,
            "source": example.source,
            "meta": example.meta,
        }
    return example_record(example)


def export_preferences(
    engine: Engine,
    project_id: int,
    out: str | Path,
    *,
    include_ties: bool = False,
    target_mix: tuple[str, dict[str, float]] | None = None,
) -> int:
    """Write the project's preference pairs as TRL jsonl; returns how many were written."""
    pairs = preference_pairs(engine, project_id, include_ties=include_ties, target_mix=target_mix)
    try:
        from rlhfkit.data import write_preferences_jsonl
    except ImportError:
        write_preferences_jsonl = None
    if write_preferences_jsonl is None or not pairs:  # an empty export is an empty file
        _write_jsonl([_pair_record(p) for p in pairs], Path(out))
    else:
        write_preferences_jsonl(pairs, Path(out))
    return len(pairs)


def demonstrations(engine: Engine, project_id: int) -> list[Example]:
    """The project's written demonstrations as SFT examples."""
    return [
        Example(
            prompt=r.prompt,
            completion=r.demonstration,
            rater_id=rater_tag(r.rater_id),
            item_id=f"{project_id}-{r.item_id}",
            source=f"rlhfkit-store:project/{project_id}/judgment/{r.id}",
            meta={"rater_groups": _groups(r), "time_on_task_ms": r.time_on_task_ms},
        )
        for r in _rows(engine, project_id, "demonstration")
    ]


def export_demonstrations(engine: Engine, project_id: int, out: str | Path) -> int:
    """Write the project's demonstrations as TRL prompt-completion jsonl."""
    examples = demonstrations(engine, project_id)
    try:
        from rlhfkit.data import write_examples_jsonl
    except ImportError:
        write_examples_jsonl = None
    if write_examples_jsonl is None or not examples:
        _write_jsonl([_example_record(e) for e in examples], Path(out))
    else:
        write_examples_jsonl(examples, Path(out))
    return len(examples)


def parse_target_mix(spec: str) -> tuple[str, dict[str, float]]:
    """``"country=IN:0.5,US:0.5"`` -> ("country", {"IN": 0.5, "US": 0.5})."""
    attribute, sep, rest = spec.partition("=")
    if not sep or not rest or not attribute.strip():
        raise InputError(f"target mix {spec!r}: expected ATTRIBUTE=GROUP:SHARE,GROUP:SHARE")
    mix = {}
    for part in rest.split(","):
        group, sep, share = part.rpartition(":")
        try:
            mix[group.strip()] = float(share)
        except ValueError:
            raise InputError(f"target mix {spec!r}: {part!r} is not GROUP:SHARE") from None
        if not sep or not group.strip():
            raise InputError(f"target mix {spec!r}: {part!r} is not GROUP:SHARE")
    return attribute.strip(), mix
