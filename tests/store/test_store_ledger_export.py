import csv
import json
from datetime import timedelta

import pytest

from rlhfkit.errors import InputError
from rlhfkit.store import (
    JudgmentInput,
    NotFound,
    ProjectSettings,
    add_items,
    create_project,
    next_task,
    submit_judgment,
)
from rlhfkit.store.export import (
    export_demonstrations,
    export_preferences,
    parse_target_mix,
    preference_pairs,
)
from rlhfkit.store.ledger import add_bonus, export_ledger_csv, pay_summary
from rlhfkit.store.projects import add_member
from rlhfkit.store.stats import group_shares, rater_stats
from rlhfkit.store.users import create_user, now_utc, update_profile


def _project(engine, **kw):
    settings = dict(name="pay", overlap_k=2, pay_per_comparison_cents=25, gold_share=0.0)
    settings.update(kw)
    return create_project(engine, ProjectSettings(**settings))


def _rater(engine, pid, name, **profile):
    uid = create_user(engine, name, "password1")
    add_member(engine, pid, uid)
    if profile:
        update_profile(engine, uid, True, profile)
    return uid


def _judge(engine, pid, rater, choice, seconds, t0, **kw):
    task = next_task(engine, pid, rater, now=t0)
    data = JudgmentInput(f"{rater}-{task.item_id}", choice, time_on_task_ms=seconds * 1000, **kw)
    submit_judgment(engine, task.assignment_id, rater, data, now=t0 + timedelta(seconds=seconds))
    return task


def test_pay_totals_bonuses_and_hourly_rate(engine):
    # 25 cents per comparison, minimum wage 15.00/h. Rater "slow" takes 60 s per task:
    # 0.25 * 60 = 15.00/h exactly (not below); "slower" takes 90 s: 10.00/h (below).
    pid = _project(engine, min_hourly_wage_cents=1500)
    add_items(
        engine, pid, [{"prompt": f"q{i}", "response_a": "a", "response_b": "b"} for i in range(2)]
    )
    slow, slower = _rater(engine, pid, "slow"), _rater(engine, pid, "slower")
    t0 = now_utc()
    for _ in range(2):
        _judge(engine, pid, slow, "A", 60, t0)
        _judge(engine, pid, slower, "B", 90, t0)
    rows = {r["username"]: r for r in pay_summary(engine, project_id=pid)}
    assert rows["slow"]["task_cents"] == 50 and rows["slow"]["time_s"] == 120
    assert rows["slow"]["hourly_cents"] == pytest.approx(1500)
    assert rows["slow"]["below_minimum"] is False
    assert rows["slower"]["hourly_cents"] == pytest.approx(1000)
    assert rows["slower"]["below_minimum"] is True
    # A bonus of 0.25 lifts "slower" to (50 + 25) cents / 180 s = 15.00/h.
    add_bonus(engine, slower, pid, 25, "thanks")
    row = pay_summary(engine, rater_id=slower)[0]
    assert row["bonus_cents"] == 25 and row["total_cents"] == 75
    assert row["hourly_cents"] == pytest.approx(1500) and not row["below_minimum"]


@pytest.mark.parametrize("amount", [0, -5, 1.5, True, "10", 10**9])
def test_bad_bonus_amounts_are_refused(engine, amount):
    pid = _project(engine)
    uid = _rater(engine, pid, "r")
    with pytest.raises(InputError, match="amount_cents"):
        add_bonus(engine, uid, pid, amount)


def test_bonus_for_unknown_rater_or_project(engine):
    pid = _project(engine)
    uid = _rater(engine, pid, "r")
    with pytest.raises(NotFound):
        add_bonus(engine, uid + 50, pid, 10)
    with pytest.raises(NotFound):
        add_bonus(engine, uid, pid + 50, 10)


def test_ledger_csv_escapes_spreadsheet_formulas(engine, tmp_path):
    pid = _project(engine)
    uid = _rater(engine, pid, "r")
    add_bonus(engine, uid, pid, 10, '=HYPERLINK("http://evil")')
    n = export_ledger_csv(engine, tmp_path / "ledger.csv")
    rows = list(csv.DictReader((tmp_path / "ledger.csv").open()))
    assert n == 1 and rows[0]["note"].startswith("'=") and rows[0]["amount_cents"] == "10"
    export_ledger_csv(engine, tmp_path / "totals.csv", totals=True)
    totals = list(csv.DictReader((tmp_path / "totals.csv").open()))
    assert totals[0]["total_cents"] == "10"


def _judged_project(engine):
    pid = _project(engine, overlap_k=3)
    add_items(
        engine,
        pid,
        [
            {
                "prompt": [{"role": "user", "content": "hi"}],
                "response_a": "<script>x</script>",
                "response_b": "hello",
            }
        ],
    )
    t0 = now_utc()
    a = _rater(engine, pid, "a", country="IN")
    b = _rater(engine, pid, "b", country="US")
    c = _rater(engine, pid, "c")
    _judge(
        engine,
        pid,
        a,
        "B",
        10,
        t0,
        strength=3,
        labels={"A": {"harmful": True}, "B": {"helpful": True}},
    )
    _judge(engine, pid, b, "B", 10, t0)
    _judge(engine, pid, c, "A", 10, t0)
    return pid, (a, b, c)


def test_preference_export_is_trl_with_raters_labels_and_groups(engine, tmp_path):
    pid, (a, b, c) = _judged_project(engine)
    out = tmp_path / "prefs.jsonl"
    assert export_preferences(engine, pid, out) == 3
    recs = [json.loads(line) for line in out.open()]
    first = recs[0]
    assert first["prompt"] == [{"role": "user", "content": "hi"}]
    assert first["chosen"] == [{"role": "assistant", "content": "hello"}]
    assert first["rejected"] == [{"role": "assistant", "content": "<script>x</script>"}]
    assert first["rater_id"] == f"rater-{a}" and first["margin"] == 3.0
    assert first["labels"] == {"chosen": {"helpful": True}, "rejected": {"harmful": True}}
    assert first["meta"]["rater_groups"]["country"] == "IN"
    assert recs[2]["meta"]["rater_groups"]["country"] == "undisclosed"
    assert {r["item_id"] for r in recs} == {f"{pid}-1"}


def test_reweighting_to_a_target_mix(engine):
    pid, _ = _judged_project(engine)
    pairs = preference_pairs(engine, pid, target_mix=("country", {"IN": 0.5, "US": 0.5}))
    weights = {p.meta["rater_groups"]["country"]: p.meta["weight"] for p in pairs}
    # Each group holds 1/3 of the judgments; the target gives IN and US 1/2 each.
    assert weights == pytest.approx({"IN": 1.5, "US": 1.5, "undisclosed": 0.0})
    assert sum(p.meta["weight"] for p in pairs) == pytest.approx(len(pairs))
    with pytest.raises(InputError, match="no judgments from country group"):
        preference_pairs(engine, pid, target_mix=("country", {"FR": 1.0}))
    with pytest.raises(InputError, match="attribute"):
        preference_pairs(engine, pid, target_mix=("shoe", {"x": 1.0}))


@pytest.mark.parametrize("spec", ["country", "country=", "country=IN", "country=IN:x", "=IN:1"])
def test_garbage_target_mix_specs(spec):
    assert parse_target_mix("country=IN:0.5,US:0.5") == ("country", {"IN": 0.5, "US": 0.5})
    with pytest.raises(InputError, match="target mix"):
        parse_target_mix(spec)


def test_ties_and_both_bad(engine):
    pid = _project(engine, overlap_k=2)
    add_items(engine, pid, [{"prompt": "q", "response_a": "a", "response_b": "b"}])
    t0 = now_utc()
    _judge(engine, pid, _rater(engine, pid, "x"), "tie", 5, t0)
    _judge(engine, pid, _rater(engine, pid, "y"), "both_bad", 5, t0)
    assert preference_pairs(engine, pid) == []
    ties = preference_pairs(engine, pid, include_ties=True)
    assert len(ties) == 1 and ties[0].tie


def test_demonstration_export(engine, tmp_path):
    pid = _project(engine, overlap_k=1)
    add_items(engine, pid, [{"prompt": "Say hi", "task_type": "demonstration"}])
    r = _rater(engine, pid, "w")
    task = next_task(engine, pid, r)
    submit_judgment(engine, task.assignment_id, r, JudgmentInput("k", demonstration="Hi!"))
    assert export_demonstrations(engine, pid, tmp_path / "sft.jsonl") == 1
    rec = json.loads((tmp_path / "sft.jsonl").read_text())
    assert rec["prompt"] == [{"role": "user", "content": "Say hi"}]
    assert rec["completion"] == [{"role": "assistant", "content": "Hi!"}]
    assert rec["rater_id"] == f"rater-{r}"
    assert pay_summary(engine, rater_id=r)[0]["demonstrations"] == 1


def test_rater_stats_and_group_shares(engine):
    pid, (a, b, c) = _judged_project(engine)
    stats = {s["username"]: s for s in rater_stats(engine, pid)}
    assert stats["a"]["agreement"] == pytest.approx(0.5)  # agrees with b, not with c
    assert stats["c"]["agreement"] == 0.0
    assert stats["a"]["judgments"] == 1 and stats["a"]["earned_cents"] == 25
    shares = group_shares(engine, pid, "country")
    assert shares == pytest.approx({"IN": 1 / 3, "US": 1 / 3, "undisclosed": 1 / 3})
    with pytest.raises(NotFound):
        group_shares(engine, pid, "password_hash")
