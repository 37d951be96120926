"""Agreement statistics against hand computations and the published figures of real files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rlhfkit.errors import InputError
from rlhfkit.raters.quality import (
    agreement_report,
    annotation_table,
    cohen_kappa,
    dawid_skene,
    fleiss_kappa,
    gold_accuracy,
    item_agreement,
    krippendorff_alpha,
    label_agreement,
    load_annotations,
    majority_vote,
    percent_agreement,
    rater_agreement,
)

# Four items, three raters, two labels. Worked by hand in the comments of each test.
TINY = [
    ("q1", "ana", "A"), ("q1", "bo", "A"), ("q1", "cy", "B"),
    ("q2", "ana", "B"), ("q2", "bo", "B"), ("q2", "cy", "B"),
    ("q3", "ana", "A"), ("q3", "bo", "A"), ("q3", "cy", "A"),
    ("q4", "ana", "A"), ("q4", "bo", "B"), ("q4", "cy", "B"),
]  # fmt: skip
# The same plus an item only ana rated (unpairable) and one rated A by ana, B by bo.
TINY_MISSING = TINY + [("q5", "ana", "A"), ("q6", "ana", "A"), ("q6", "bo", "B")]


def test_percent_agreement_and_fleiss_by_hand():
    ann = annotation_table(TINY)
    # Agreeing ordered pairs 2+6+6+2 of 4*3*2 = 24.
    assert percent_agreement(ann) == pytest.approx(16 / 24)
    # P_i = 1/3, 1, 1, 1/3 -> mean 2/3; p_A = p_B = 1/2 -> P_e = 1/2; kappa = (2/3-1/2)/(1/2).
    assert fleiss_kappa(ann) == pytest.approx(1 / 3)


def test_fleiss_with_unequal_rater_counts():
    ann = annotation_table(TINY_MISSING)
    # q5 is dropped; q6 has P=0: mean P = (8/3)/5 = 8/15; p_A = p_B = 7/14 -> kappa = 1/15.
    assert fleiss_kappa(ann) == pytest.approx(1 / 15)


def test_krippendorff_alpha_by_hand():
    # Coincidences: o_AA = 1+3 = 4, o_BB = 3+1 = 4, o_AB = o_BA = 1+1 = 2, n = 12, n_A = n_B = 6.
    # D_o = 4/12, D_e = 2*6*6/(12*11) = 6/11, alpha = 1 - (1/3)/(6/11) = 7/18.
    assert krippendorff_alpha(annotation_table(TINY)) == pytest.approx(7 / 18)
    # q5 is unpairable; q6 adds o_AB = o_BA = 1: n = 14, D_o = 6/14, D_e = 98/182 -> 10/49.
    assert krippendorff_alpha(annotation_table(TINY_MISSING)) == pytest.approx(10 / 49)


def test_cohen_kappa_by_hand():
    ann = annotation_table(TINY)
    # ana A,B,A,A vs bo A,B,A,B: p_o = 3/4; p_e = 3/4*1/2 + 1/4*1/2 = 1/2 -> kappa = 1/2.
    assert cohen_kappa(ann, "ana", "bo") == pytest.approx(0.5)
    # Perfect agreement on both labels is kappa 1; a rater never shares items -> nan.
    same = annotation_table([("a", "x", 1), ("a", "y", 1), ("b", "x", 2), ("b", "y", 2)])
    assert cohen_kappa(same, "x", "y") == pytest.approx(1.0)
    assert math.isnan(cohen_kappa(same, "x", "nobody"))


def test_per_item_label_and_rater_tables_by_hand():
    ann = annotation_table(TINY)
    items = item_agreement(ann)
    assert items.loc["q1", "majority_label"] == "A"
    assert items.loc["q1", "pair_agreement"] == pytest.approx(1 / 3)
    assert items["unanimous"].tolist() == [False, True, True, False]
    labels = label_agreement(ann)
    # With two labels and equal counts per item, each label's kappa equals the overall one.
    assert labels.loc["A", "kappa"] == pytest.approx(1 / 3)
    # Label A: agreeing ordered pairs 2+6 = 8, mixed pairs 2+2 = 4 -> 8/12.
    assert labels.loc["A", "specific_agreement"] == pytest.approx(2 / 3)
    raters = rater_agreement(ann)
    # ana agrees with 1/2, 2/2, 2/2, 0/2 peers; the others' unique majority exists on q2-q4
    # (q1 is A vs B) and ana matches it on q2 and q3.
    assert raters.loc["ana", "peer_agreement"] == pytest.approx(5 / 8)
    assert raters.loc["ana", "loo_majority_agreement"] == pytest.approx(2 / 3)
    assert not raters["flagged"].any()


def test_majority_vote_leaves_out_ties_and_gold_accuracy():
    ann = annotation_table([("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 1)])
    assert majority_vote(ann).to_dict() == {"b": 1}
    acc = gold_accuracy(ann, {"a": 2, "b": 1})
    assert acc.loc["x", "accuracy"] == pytest.approx(0.5)
    assert acc.loc["y", "accuracy"] == pytest.approx(1.0)
    assert acc.loc["(pool)", "n_gold"] == 4


def _pool(seed: int = 0, n_items: int = 200, careless: str = "zed") -> pd.DataFrame:
    """Five careful raters (85 % right) and one who clicks at random, on every item."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n_items)
    rows = []
    for rater in ["r1", "r2", "r3", "r4", "r5", careless]:
        for i, t in enumerate(truth):
            if rater == careless:
                label = int(rng.integers(0, 3))
            else:
                label = int(t) if rng.random() < 0.85 else int((t + rng.integers(1, 3)) % 3)
            rows.append((i, rater, label))
    return annotation_table(rows)


def test_careless_rater_is_flagged_and_distrusted():
    ann = _pool()
    raters = rater_agreement(ann)
    assert raters.index[raters["flagged"]].tolist() == ["zed"]
    ds = dawid_skene(ann)
    assert ds.trust.idxmin() == "zed"
    assert ds.trust.drop("zed").min() > 0.75
    assert ds.agreement_with_majority > 0.95


def test_two_raters_are_never_flagged():
    ann = annotation_table(
        [(i, r, (i + (r == "b") * (i % 2)) % 2) for i in range(30) for r in "ab"]
    )
    assert not rater_agreement(ann)["flagged"].any()


@pytest.mark.parametrize(
    "rows, match",
    [
        ([("q", "a", "x"), ("q", "a", "y")], "more than once"),
        ([("q", "a")], "expected \\(item_id, rater_id, label\\)"),
        ([{"item_id": "q", "label": "x"}], "missing field 'rater_id'"),
        ([("q", None, "x")], "must all be set"),
    ],
)
def test_bad_annotations_are_input_errors(rows, match):
    with pytest.raises(InputError, match=match):
        annotation_table(rows)


def test_pandalm_figures(shared_data):
    report = agreement_report(load_annotations(shared_data("pandalm/testset-v1.json")))
    assert round(report["fleiss_kappa"], 3) == 0.864
    assert round(report["krippendorff_alpha"], 3) == 0.864
    assert report["unanimous_items"] == 879  # "all three agree on 879 of 999"
    assert report["dawid_skene"]["agreement_with_majority"] >= 0.95
    assert report["flagged_raters"] == []


@pytest.mark.parametrize(
    "model, kappa", [("gpt4", 0.970), ("llama2new", 0.926), ("mistralinstruct", 0.920)]
)
def test_xstest_cohen_kappa(shared_data, model, kappa):
    ann = load_annotations(shared_data(f"xstest/xstest_v2_completions_{model}.csv"))
    assert round(cohen_kappa(ann.table, "annotation_1", "annotation_2"), 3) == kappa
    # final_label is the adjudicated label: each annotator should match it most of the time.
    acc = gold_accuracy(ann.table, ann.gold)
    assert (acc["accuracy"] > 0.95).all()


def test_generic_annotation_file_and_garbage(tmp_path):
    good = tmp_path / "ann.jsonl"
    good.write_text(
        "\n".join(
            f'{{"item_id": "{i}", "rater_id": "{r}", "label": "{lab}", "gold": "A"}}'
            for i, r, lab in TINY
        )
    )
    ann = load_annotations(good)
    assert fleiss_kappa(ann.table) == pytest.approx(1 / 3)
    assert ann.gold["q1"] == "A"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": 1, "rater_id": "a", "label": "x"}\n{"item_id": 2, "rater_id"\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not valid JSON"):
        load_annotations(bad, "annotations")
    pandalm = tmp_path / "p.json"
    pandalm.write_text(
        '[{"idx": 7, "instruction": "i", "input": "", "response1": "a", "response2": "b",'
        ' "annotator1": 1, "annotator2": 5, "annotator3": 0}]'
    )
    with pytest.raises(InputError, match=r"p.json:1: annotator2 is 5"):
        load_annotations(pandalm)
    noise = tmp_path / "noise.txt"
    noise.write_text("hello\nworld\n")
    with pytest.raises(InputError, match="noise.txt:1: cannot tell the format"):
        load_annotations(noise)
    with pytest.raises(InputError, match="no such file"):
        load_annotations(tmp_path / "absent.json")


def test_annotations_from_pairs_positions_and_missing_ids():
    from rlhfkit.data.records import PreferencePair
    from rlhfkit.raters import annotations_from_pairs

    def pair(rater, chosen, rejected, **kw):
        return PreferencePair([], chosen, rejected, rater_id=rater, item_id="q", **kw)

    recorded = [
        pair("a", "x", "y", meta={"shown_first": "chosen"}),
        pair("b", "y", "x", meta={"shown_first": "rejected"}),
        pair("c", "x", "y", tie=True),
    ]
    table = annotations_from_pairs(recorded).table.set_index("rater_id")["label"]
    assert table.to_dict() == {"a": "first", "b": "second", "c": "tie"}
    # Without a recorded order, raters who chose the same text get the same label.
    unordered = [pair("a", "x", "y"), pair("b", "x", "y"), pair("c", "y", "x")]
    labels = annotations_from_pairs(unordered).table["label"].tolist()
    assert labels[0] == labels[1] != labels[2]
    with pytest.raises(InputError, match="no rater_id or item_id"):
        annotations_from_pairs([PreferencePair([], "x", "y", source="f.jsonl:3")])


def test_singly_rated_items_give_undefined_agreement_not_errors():
    report = agreement_report(annotation_table([(1, "a", "x"), (2, "a", "y")]))
    assert report["fleiss_kappa"] is None and report["krippendorff_alpha"] is None
    assert report["percent_agreement"] is None and report["flagged_raters"] == []


def test_agreement_labels_responses_not_screen_positions():
    # Two raters chose the same response but saw the pair in opposite orders.
    from rlhfkit.data.records import PreferencePair
    from rlhfkit.raters.quality import annotations_from_pairs, percent_agreement

    prompt = [{"role": "user", "content": "q"}]
    pairs = [
        PreferencePair(
            prompt, "good", "bad", rater_id="r1", item_id="i", meta={"shown_first": "chosen"}
        ),
        PreferencePair(
            prompt, "good", "bad", rater_id="r2", item_id="i", meta={"shown_first": "rejected"}
        ),
    ]
    assert percent_agreement(annotations_from_pairs(pairs).table) == 1.0
