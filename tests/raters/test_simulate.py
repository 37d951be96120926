"""Simulated rater pools: the choice function, pool files, bias-profile recovery of planted
weights, a careless rater caught by the quality statistics, and a pool at work on a live server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rlhfkit.cli import main
from rlhfkit.errors import InputError
from rlhfkit.raters.bias import bias_profile, log_words, personality_scorers
from rlhfkit.raters.personas import (
    Persona,
    Pool,
    attribute_values,
    decide,
    gold_reward,
    load_pool,
    parse_pool,
)
from rlhfkit.raters.quality import annotation_table, dawid_skene, rater_agreement
from rlhfkit.raters.simulate import (
    LocalPlatform,
    create_project,
    export_preferences,
    simulate_judgments,
    simulate_pool,
    synthetic_items,
)

POOLS = Path(__file__).resolve().parents[2] / "configs" / "pools"


# --- the choice function ------------------------------------------------------------------------


def test_choice_probability_is_bradley_terry_with_position_bias():
    persona = Persona("p", {"length": 1.0}, temperature=2.0, position_bias=0.5)
    rng = np.random.default_rng(0)
    first, second = {"length": 3.0}, {"length": 2.0}
    picks = [decide(persona, first, second, rng).choice == "first" for _ in range(20000)]
    expected = 1 / (1 + math.exp(-(0.5 + (3.0 - 2.0) / 2.0)))
    assert abs(np.mean(picks) - expected) < 0.01


def test_lapses_ties_strength_and_labels():
    rng = np.random.default_rng(1)
    careless = Persona("c", {"length": 5.0}, lapse_rate=1.0)
    ds = [decide(careless, {"length": 9.0}, {"length": 0.0}, rng) for _ in range(3000)]
    shares = {c: np.mean([d.choice == c for d in ds]) for c in ("first", "second", "tie")}
    assert all(abs(s - 1 / 3) < 0.04 for s in shares.values()), shares
    assert all(d.lapsed and d.labels == ({}, {}) for d in ds)

    tied = Persona("t", {"length": 1.0}, tie_band=0.5)
    d = decide(tied, {"length": 1.2}, {"length": 1.0}, rng)
    assert (d.choice, d.strength) == ("tie", None)

    from rlhfkit.raters.personas import LabelRule

    labeller = Persona(
        "l",
        {"length": 3.0},
        strength="extreme",
        labels={"verbose": LabelRule("length", above=2.0), "harsh": LabelRule("length", below=1)},
    )
    d = decide(labeller, {"length": 3.0}, {"length": 0.5}, rng, label_set=["verbose", "polite"])
    assert d.strength == 3
    assert d.labels == ({"verbose": True}, {"verbose": False})  # harsh is not offered
    mild = Persona("m", {"length": 3.0}, strength="mild")
    assert decide(mild, {"length": 3.0}, {"length": 0.0}, rng).strength == 1
    sure = Persona("s", {"length": 3.0})
    assert decide(sure, {"length": 3.0}, {"length": 0.0}, rng).strength == 3


def test_speed_is_lognormal_around_the_median():
    persona = Persona("p", {"length": 1.0}, seconds_per_task=20.0, seconds_spread=0.5)
    rng = np.random.default_rng(2)
    secs = [decide(persona, {"length": 1.0}, {"length": 1.0}, rng).seconds for _ in range(4000)]
    assert abs(np.median(secs) - 20.0) < 1.0
    assert abs(np.std(np.log(secs)) - 0.5) < 0.03


# --- pools ----------------------------------------------------------------------------------------


def test_example_pools_load_and_differ_only_in_length():
    pools = {p.stem: load_pool(p) for p in sorted(POOLS.glob("*.yaml"))}
    assert {"balanced", "length-loving", "careless-mix"} <= set(pools)
    a, b = pools["balanced"], pools["length-loving"]
    assert [p.name for p in a.personas] == [p.name for p in b.personas]
    assert a.shares == b.shares and a.raters == b.raters
    for pa, pb in zip(a.personas, b.personas, strict=True):
        assert pa.weights["length"] == 0.0 and pb.weights["length"] > 0
        rest_a = {**vars(pa), "weights": {k: v for k, v in pa.weights.items() if k != "length"}}
        rest_b = {**vars(pb), "weights": {k: v for k, v in pb.weights.items() if k != "length"}}
        assert rest_a == rest_b
    counts = {p.name: 0 for p in a.personas}
    for persona in a.assign():
        counts[persona.name] += 1
    assert counts == {"careful": 9, "hurried": 3}  # 0.75 and 0.25 of 12


def test_assign_largest_remainder():
    pool = Pool("p", 7, [Persona("a", {"length": 1}), Persona("b", {"length": 1})], [0.5, 0.5])
    assert len(pool.assign()) == 7 and len(pool.assign(3)) == 3


def test_gold_reward_is_the_share_weighted_utility():
    pool = parse_pool(
        {
            "name": "mix",
            "raters": 4,
            "personas": [
                {"name": "long", "share": 3, "weights": {"length": 1.0}},
                {"name": "polite", "share": 1, "weights": {"politeness": 2.0, "length": -0.5}},
            ],
        }
    )
    texts = ["Thank you so much! Here it is.", "No.", "a b c d e f g h"]
    values = attribute_values(["length", "politeness"], texts)
    expected = 0.75 * values["length"] + 0.25 * (
        2.0 * values["politeness"] - 0.5 * values["length"]
    )
    got = gold_reward(pool, [[]] * 3, texts)
    assert np.allclose(got, expected)
    assert got[2] > got[1]  # longer wins for this length-leaning mix
    with pytest.raises(InputError, match="one prompt per response"):
        gold_reward(pool, [[]], texts)


GARBAGE_POOLS = [
    ("name: x\nraters: [\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
    ("name: x\nraters: 0\npersonas: [{name: a, weights: {length: 1}}]\n", ":2: raters"),
    ("name: x\nraters: 3\n", "personas: expected a non-empty list"),
    ("name: x\nraters: 3\npersonas:\n  - name: a\n    weights: {lenght: 1}\n", ":5: personas[0]"),
    (
        "name: x\nraters: 3\npersonas:\n  - name: a\n    weights: {length: 1}\n"
        "    temperature: -1\n",
        ":6: personas[0].temperature: expected a number > 0",
    ),
    (
        "name: x\nraters: 3\npersonas:\n  - name: a\n    weights: {length: 1}\n"
        "    lapse_rate: 1.5\n",
        "lapse_rate: expected a number <= 1",
    ),
    (
        "name: x\nraters: 3\npersonas:\n  - name: a\n    weights: {length: 1}\n"
        "    tags: {shoe_size: 9}\n",
        "tags.shoe_size: unknown profile field",
    ),
    (
        "name: x\nraters: 3\npersonas:\n  - name: a\n    weights: {length: 1}\n"
        "    strength: loud\n",
        "strength: expected one of calibrated",
    ),
    (
        "name: x\nraters: 3\npersonas:\n  - name: a\n    weights: {length: 1}\n"
        "    labels: {verbose: {attribute: length}}\n",
        "expected a threshold",
    ),
    (
        "name: x\nraters: 3\npersonas:\n  - {name: a, weights: {length: 1}}\n"
        "  - {name: a, weights: {length: 2}}\n",
        ":5: personas[1].name: persona 'a' appears twice",
    ),
    ("name: x\nraters: 3\npersonas: [{name: a, weights: {length: yes}}]\n", "expected a number"),
    ("name: x\nraters: 3\ncolour: red\npersonas: [{name: a, weights: {length: 1}}]\n", "colour"),
    ("\x00\x01binary", "pool"),
]


@pytest.mark.parametrize(("text", "message"), GARBAGE_POOLS)
def test_garbage_pool_files_name_the_line_and_field(tmp_path, text, message):
    path = tmp_path / "pool.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_pool(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_missing_pool_file(tmp_path):
    with pytest.raises(InputError, match="no such pool file"):
        load_pool(tmp_path / "absent.yaml")


# --- recovery ----------------------------------------------------------------------------------

PLANTED = {
    "name": "planted",
    "raters": 2,
    "personas": [
        {
            "name": "wordy",
            "weights": {"length": 1.0, "politeness": 2.5, "refusal": -2.0},
            "temperature": 1.0,
            "position_bias": 0.3,
            "lapse_rate": 0.02,
        },
        {
            "name": "terse",
            "weights": {"length": -0.8, "hedging": -1.5, "formatting": 1.5},
            "temperature": 0.8,
            "position_bias": -0.4,
            "lapse_rate": 0.02,
        },
    ],
}


def test_bias_profile_recovers_each_personas_planted_weights():
    pool = parse_pool(PLANTED)
    # One rater per persona, one judgment per item: about 400 judgments each.
    pairs = simulate_judgments(pool, synthetic_items(800, seed=0), overlap_k=1, seed=0)
    for persona in pool.personas:
        own = [p for p in pairs if p.meta["persona"] == persona.name]
        assert 350 < len(own) < 450
        scorers = personality_scorers([a for a in persona.weights if a != "length"])
        profile = bias_profile(own, {"length": log_words}, scorers)
        assert profile.converged and profile.position_known
        for name, truth in persona.planted_coefficients().items():
            c = profile.coefficients[name]
            assert np.sign(c.estimate) == np.sign(truth), (persona.name, name, c)
            assert c.ci_low <= truth <= c.ci_high, (persona.name, name, truth, c)


def test_a_careless_rater_is_flagged_and_least_trusted():
    careful = {
        "weights": {"length": 0.5, "politeness": 2.0, "refusal": -2.0},
        "temperature": 0.4,
        "lapse_rate": 0.02,
    }
    pool = parse_pool(
        {
            "name": "careless",
            "raters": 6,
            "personas": [
                {"name": "careful", "share": 5, **careful},
                {"name": "careless", "share": 1, **careful, "lapse_rate": 0.9},
            ],
        }
    )
    pairs = simulate_judgments(pool, synthetic_items(400, seed=3), overlap_k=3, seed=3)
    # Label by the item's responses (A/B), not the screen position each rater saw.
    ann = annotation_table([(p.item_id, p.rater_id, p.meta["choice"]) for p in pairs])
    per_rater = rater_agreement(ann)
    flagged = set(per_rater.index[per_rater["flagged"]])
    assert flagged == {r for r in per_rater.index if r.endswith("careless")}
    careful_agreement = per_rater.loc[[r for r in per_rater.index if r.endswith("careful")]]
    assert (careful_agreement["peer_agreement"] > 0.6).all()  # realistic: 63-77 %
    trust = dawid_skene(ann).trust
    assert trust.idxmin().endswith("careless")


# --- through a live server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def live():
    with LocalPlatform() as platform:
        yield platform


def test_a_pool_works_through_the_platform_api(live, tmp_path):
    items = synthetic_items(12, seed=5)
    pid = create_project(live.base_url, live.admin_token, "sim-live", items, overlap_k=3)
    pool = parse_pool(
        {
            "name": "tiny",
            "raters": 4,
            "personas": [
                {
                    "name": "wordy",
                    "share": 1,
                    "weights": {"length": 10.0},
                    "tags": {"country": "KE"},
                },
                {
                    "name": "terse",
                    "share": 1,
                    "weights": {"length": -10.0},
                    "tags": {"country": "IN"},
                },
            ],
        }
    )
    summary = simulate_pool(pool, live.base_url, pid, live.admin_token, seed=1)
    # Every item got exactly k = 3 judgments from 3 different raters, then the queue ran dry.
    assert summary["judgments"] == 12 * 3
    assert all(r["stopped"] == "queue empty" for r in summary["raters"])
    assert sum(summary["choices"].values()) == 36
    out = tmp_path / "prefs.jsonl"
    n = export_preferences(live.base_url, live.admin_token, pid, out, include_ties=True)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == len(records) == 36
    per_item: dict[str, set] = {}
    for rec in records:
        per_item.setdefault(rec["item_id"], set()).add(rec["rater_id"])
        assert rec["meta"]["shown_first"] in ("chosen", "rejected")
        assert rec["meta"]["rater_groups"]["country"] in ("KE", "IN")
    assert all(len(raters) == 3 for raters in per_item.values())
    # The wordy raters chose the longer reply when the lengths differ clearly (odds e**10 to 1).
    by_persona = {r["user_id"]: r["persona"] for r in summary["raters"]}
    for rec in records:
        persona = by_persona[int(rec["rater_id"].split("-")[1])]
        c, r = rec["chosen"][0]["content"], rec["rejected"][0]["content"]
        if rec["tie"] or abs(log_words(c) - log_words(r)) < 1.0:
            continue
        assert (log_words(c) > log_words(r)) == (persona == "wordy"), rec


def test_cli_simulate_with_max_tasks_and_rater_tokens(live, capsys, monkeypatch):
    pid = create_project(
        live.base_url, live.admin_token, "sim-cli", synthetic_items(5), overlap_k=2
    )
    pool = str(POOLS / "careless-mix.yaml")
    monkeypatch.setenv("RLHFKIT_ADMIN_TOKEN", live.admin_token)
    args = ["raters", "simulate", "--pool", pool, "--server", live.base_url, "--project", str(pid)]
    assert main([*args, "--max-tasks", "4", "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["judgments"] == 4 and len(summary["raters"]) == 10
    # Existing accounts by token: the first rater of the previous run continues the project.
    from rlhfkit.raters.simulate import PlatformClient

    admin = PlatformClient(live.base_url, live.admin_token)
    uid = summary["raters"][0]["user_id"]
    token = admin.call("POST", f"/users/{uid}/tokens").json()["token"]
    admin.close()
    assert main([*args, "--rater-token", token]) == 0
    again = json.loads(capsys.readouterr().out)
    assert len(again["raters"]) == 1 and again["raters"][0]["user_id"] == uid
    assert again["raters"][0]["stopped"] == "queue empty"


def test_cli_simulate_errors_exit_2(live, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RLHFKIT_ADMIN_TOKEN", raising=False)
    pool = str(POOLS / "balanced.yaml")
    base = ["raters", "simulate", "--pool", pool, "--project", "1"]
    cases = [
        ([*base, "--server", live.base_url, "--admin-token", "wrong"], "token or password"),
        ([*base, "--server", live.base_url], "admin token"),
        ([*base, "--server", "http://127.0.0.1:9", "--admin-token", "x"], "cannot reach"),
        (
            [
                "raters",
                "simulate",
                "--pool",
                str(tmp_path / "x.yaml"),
                "--server",
                live.base_url,
                "--project",
                "1",
                "--admin-token",
                "x",
            ],
            "no such pool file",
        ),  # fmt: skip
        (
            [
                *base,
                "--server",
                live.base_url,
                "--admin-token",
                live.admin_token,
                "--project",
                "999",
            ],
            "404",
        ),  # fmt: skip
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
