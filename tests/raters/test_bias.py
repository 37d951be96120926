"""Bias profiles: planted coefficients are recovered within their intervals; real files run."""

from __future__ import annotations

import numpy as np
import pytest

from rlhfkit.data.records import PreferencePair
from rlhfkit.errors import InputError
from rlhfkit.raters.bias import (
    bias_profile,
    bias_profiles,
    fit_bias,
    fit_logistic,
    load_pairs,
    log_words,
)


def _politeness(text: str) -> float:
    return float(text.split().count("please"))


def _synthetic_pairs(
    n: int, position: float, length: float, polite: float, seed: int, record_position: bool = True
) -> list[PreferencePair]:
    """Pairs judged by a planted logistic rater: P(first chosen) = sigmoid(position +
    length * log-word-ratio + polite * difference in "please" count)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        texts = []
        for _ in range(2):
            words = ["word"] * int(rng.integers(1, 120)) + ["please"] * int(rng.integers(0, 4))
            rng.shuffle(words)
            texts.append(" ".join(words) + f" #{i}")
        a, b = texts
        logit = (
            position
            + length * (log_words(a) - log_words(b))
            + polite * (_politeness(a) - _politeness(b))
        )
        first_chosen = rng.random() < 1 / (1 + np.exp(-logit))
        chosen, rejected = (a, b) if first_chosen else (b, a)
        meta = {"shown_first": "chosen" if first_chosen else "rejected"} if record_position else {}
        pairs.append(PreferencePair([], chosen, rejected, rater_id=f"r{i % 4}", meta=meta))
    return pairs


ATTRS = {"length": log_words, "polite": _politeness}


def test_planted_coefficients_recovered_within_intervals():
    planted = {"position": 0.4, "length": 0.8, "polite": -0.6}
    profile = bias_profile(_synthetic_pairs(3000, *planted.values(), seed=1), ATTRS)
    assert profile.converged and profile.position_known
    for name, truth in planted.items():
        c = profile.coefficients[name]
        assert np.sign(c.estimate) == np.sign(truth), name
        assert c.ci_low <= truth <= c.ci_high, (name, c)
        assert c.p_value < 1e-3


def test_without_recorded_position_order_is_randomised_and_no_intercept():
    pairs = _synthetic_pairs(3000, 0.0, 0.8, -0.6, seed=2, record_position=False)
    profile = bias_profile(pairs, ATTRS, seed=3)
    assert not profile.position_known and "position" not in profile.coefficients
    assert profile.coefficients["length"].ci_low <= 0.8 <= profile.coefficients["length"].ci_high
    assert profile.coefficients["polite"].ci_low <= -0.6 <= profile.coefficients["polite"].ci_high


def test_matches_sklearn_maximum_likelihood():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    y = (rng.random(500) < 1 / (1 + np.exp(-(0.3 + x @ [1.0, -2.0])))).astype(float)
    beta, se, ok = fit_logistic(np.column_stack([np.ones(500), x]), y)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(x, y)
    assert ok
    np.testing.assert_allclose(beta, [ref.intercept_[0], *ref.coef_[0]], atol=1e-4)
    assert np.all(se > 0)


def test_confidence_intervals_cover_about_95_percent():
    rng = np.random.default_rng(5)
    truth = np.array([0.2, 0.7])
    hits, reps = np.zeros(2), 300
    for _ in range(reps):
        x = np.column_stack([np.ones(300), rng.normal(size=300)])
        y = (rng.random(300) < 1 / (1 + np.exp(-(x @ truth)))).astype(float)
        beta, se, _ = fit_logistic(x, y)
        hits += np.abs(beta - truth) <= 1.96 * se
    # Binomial sd of coverage over 300 runs is 1.3 points: 0.90-0.99 is a wide margin.
    assert np.all((hits / reps > 0.90) & (hits / reps < 0.99)), hits / reps


def test_cluster_robust_errors_do_not_count_repeated_judgments_as_new_evidence():
    pairs = _synthetic_pairs(600, 0.0, 0.8, 0.0, seed=4)
    single = bias_profile(pairs)
    for i, p in enumerate(pairs):
        p.item_id = str(i)
    # Three raters who always agree add no information about the population of pairs.
    tripled = [PreferencePair(**{**vars(p), "rater_id": r}) for p in pairs for r in "abc"]
    clustered = bias_profile(tripled)
    assert clustered.std_errors.startswith("cluster")
    se1, se3 = single.coefficients["length"].std_error, clustered.coefficients["length"].std_error
    assert se3 == pytest.approx(se1, rel=0.05)
    assert clustered.coefficients["length"].estimate == pytest.approx(
        single.coefficients["length"].estimate
    )


def test_ties_separation_and_constant_attributes():
    pairs = [PreferencePair([], "a b c d", "a", meta={"shown_first": "chosen"}) for _ in range(20)]
    pairs += [PreferencePair([], "x", "y z", tie=True) for _ in range(5)]
    profile = bias_profile(pairs)
    assert profile.n_judgments == 20 and profile.n_ties == 5
    # The longer response always wins and is always first: perfectly separated, not estimable.
    assert not profile.converged
    assert profile.longer_chosen["share"] == 1.0
    same_length = fit_bias(["a b", "c d"] * 10, ["e f", "g h"] * 10, [True, False] * 10)
    assert "length" not in same_length.coefficients  # no variation, nothing to estimate


def test_per_rater_profiles_and_minimum():
    pairs = _synthetic_pairs(400, 0.0, 1.0, 0.0, seed=6)
    out = bias_profiles(pairs, min_judgments=90)
    assert sorted(out["raters"]) == ["r0", "r1", "r2", "r3"]
    assert out["pool"].n_judgments == 400
    assert bias_profiles(pairs, min_judgments=101)["skipped_raters"] == 4


def test_personality_scorers_hook():
    scorers = pytest.importorskip("rlhfkit.personality.scorers")
    from rlhfkit.raters.bias import personality_scorers

    refusing = "Sorry, but I can't assist with that."
    pairs = [
        PreferencePair([], refusing if i % 3 else f"Sure, here is idea {i}.", "Sure, here it is.")
        for i in range(60)
    ]
    out = bias_profile(pairs, scorers=personality_scorers(["refusal"]))
    assert "refusal" in out.coefficients
    assert scorers.score("refusal", [refusing])[0] > 0.5


def test_hh_crowdworkers_length_profile(shared_data):
    pairs = load_pairs(shared_data("hh-rlhf/harmless-base-dev.jsonl.gz"))
    profile = bias_profile(pairs)
    assert profile.n_judgments == 1800 and profile.converged
    # Documented in docs/raters.md: on the harmless split the shorter reply tends to win.
    assert profile.coefficients["length"].ci_high < 0
    assert profile.longer_chosen["ci_high"] < 0.5


def test_pandalm_pairs_record_position_and_ties(shared_data):
    pairs = load_pairs(shared_data("pandalm/testset-v1.json"))
    assert len(pairs) == 2997 and sum(p.tie for p in pairs) == 326
    profile = bias_profile(pairs)
    assert profile.position_known and profile.std_errors.startswith("cluster")
    assert profile.coefficients["length"].ci_low > 0


@pytest.mark.parametrize(
    "content, fmt, match",
    [
        ('{"chosen": "no turns", "rejected": "x"}\n', "hh", "no 'Human:' or 'Assistant:' turns"),
        ('{"chosen": [1], "rejected": "x"}\n', None, "chosen is a array"),
        ('{"chosen": "\\n\\nHuman: a", "rejected"\n', "hh", ":1:"),
        ("hello\n", None, "cannot tell the format"),
    ],
)
def test_garbage_pair_files(tmp_path, content, fmt, match):
    path = tmp_path / "pairs.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=match):
        load_pairs(path, fmt)


def test_unrecorded_order_does_not_change_the_estimates():
    # Without an intercept the likelihood is symmetric under swapping a pair's order, so the
    # random order used for unrecorded positions cannot move the coefficients.
    pairs = _synthetic_pairs(500, 0.0, 0.8, -0.6, seed=7, record_position=False)
    a, b = bias_profile(pairs, ATTRS, seed=1), bias_profile(pairs, ATTRS, seed=2)
    for name in ATTRS:
        assert a.coefficients[name].estimate == pytest.approx(b.coefficients[name].estimate)
        assert a.coefficients[name].std_error == pytest.approx(b.coefficients[name].std_error)
