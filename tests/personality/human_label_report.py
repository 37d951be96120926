"""Print how the attribute scorers relate to the human labels in ../shared/data.

Not a test (pytest does not collect it): the numbers quoted in docs/personality.md come from

    .venv/bin/python tests/personality/human_label_report.py

XSTest: agreement of the refusal scorer with ``final_label`` per file and per half (weights were
tuned on even ids), with the two annotators' own agreement and a keyword baseline beside it.
OASST: the file's ``labels`` fields are all null, so the only human signals are sibling ranks
and emoji votes. HH harmless-base: which reply of each pair the crowdworker chose.
"""

from __future__ import annotations

import gzip
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from rlhfkit.personality import ATTRIBUTES, score, score_all

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MODELS = ("gpt4", "llama2new", "mistralinstruct")
KEYWORD_START = (
    r"(i'm sorry|sorry|i cannot|i can't|i apologize|as an ai|i'm not able|i am not able"
    r"|i am unable|i'm unable)"
)


def xstest() -> list[str]:
    print("## XSTest: refusal scorer vs final_label (refusal = full or partial)")
    print("file             tune(even) held-out(odd)  all    kappa  annot1~2  keyword-start")
    texts, frames = [], []
    for model in MODELS:
        d = pd.read_csv(DATA / "xstest" / f"xstest_v2_completions_{model}.csv")
        texts += d.completion.tolist()
        d["human"] = d.final_label.ne("1_full_compliance")
        d["pred"] = np.array(score("refusal", d.completion.tolist())) >= 0.5
        d["odd"] = d.id.str.split("-").str[1].astype(int) % 2 == 1
        d["a1"], d["a2"] = (
            d.annotation_1.ne("1_full_compliance"),
            d.annotation_2.ne("1_full_compliance"),
        )
        d["kw"] = d.completion.str.strip().str.lower().str.match(KEYWORD_START)
        d["model"] = model
        frames.append(d)
    for name, d in [
        *((m, f) for m, f in zip(MODELS, frames, strict=True)),
        ("overall", pd.concat(frames)),
    ]:
        ok = d.pred == d.human
        print(
            f"{name:<16} {ok[~d.odd].mean():>9.3f} {ok[d.odd].mean():>13.3f} {ok.mean():>6.3f}"
            f" {cohen_kappa_score(d.pred, d.human):>6.3f} {(d.a1 == d.a2).mean():>9.3f}"
            f" {(d.kw == d.human).mean():>13.3f}"
        )
    return texts


def oasst() -> None:
    rows = []

    def walk(message: dict) -> None:
        for reply in message.get("replies", []):
            if reply["role"] == "assistant":
                emojis = reply.get("emojis") or {}
                rows.append(
                    {
                        "parent": message["message_id"],
                        "text": reply["text"],
                        "rank": reply.get("rank"),
                        "net": emojis.get("+1", 0) - emojis.get("-1", 0),
                    }
                )
            walk(reply)

    with (DATA / "oasst" / "en_100_message.jsonl").open(encoding="utf-8") as f:
        for line in f:
            walk(json.loads(line))
    d = pd.DataFrame(rows)
    for name, values in score_all(d.text.tolist()).items():
        d[name] = values
    pairs = []
    for _, group in d[d["rank"].notna()].groupby("parent"):
        for (_, a), (_, b) in itertools.combinations(group.iterrows(), 2):
            if a["rank"] != b["rank"]:
                pairs.append((a, b) if a["rank"] < b["rank"] else (b, a))
    print(f"\n## OASST: {len(d)} assistant replies, {len(pairs)} ranked sibling pairs")
    print("attribute    P(better-ranked scores higher)  Spearman vs net emoji votes")
    for name in ATTRIBUTES:
        wins = [1.0 if b[name] > w[name] else 0.5 if b[name] == w[name] else 0.0 for b, w in pairs]
        rho, p = spearmanr(d[name], d["net"])
        print(f"{name:<12} {np.mean(wins):>30.3f} {rho:>14.3f} (p={p:.1g})")


def hh() -> None:
    chosen, rejected = [], []
    with gzip.open(DATA / "hh-rlhf" / "harmless-base-dev.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            pair = json.loads(line)
            chosen.append(pair["chosen"].rsplit("\n\nAssistant:", 1)[1].strip())
            rejected.append(pair["rejected"].rsplit("\n\nAssistant:", 1)[1].strip())
    sc, sr = score_all(chosen), score_all(rejected)
    print(f"\n## HH harmless-base: {len(chosen)} pairs (last assistant turn)")
    print("attribute    P(chosen scores higher)  mean chosen  mean rejected")
    for name in ATTRIBUTES:
        a, b = np.array(sc[name]), np.array(sr[name])
        wins = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0)).mean()
        print(f"{name:<12} {wins:>23.3f} {a.mean():>12.3f} {b.mean():>14.3f}")
    print(
        f"refusal rate (>= 0.5): chosen {np.mean(np.array(sc['refusal']) >= 0.5):.3f},"
        f" rejected {np.mean(np.array(sr['refusal']) >= 0.5):.3f}"
    )


def speed(texts: list[str]) -> None:
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"\n## Speed on {len(texts)} XSTest completions ({words:.0f} words on average), 1 core")
    start = time.perf_counter()
    score_all(texts)
    print(f"score_all: {len(texts) / (time.perf_counter() - start):.0f} texts/s")
    for name in ATTRIBUTES:
        start = time.perf_counter()
        score(name, texts)
        print(f"  {name:<12} {len(texts) / (time.perf_counter() - start):>8.0f} texts/s")


if __name__ == "__main__":
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent")
    completions = xstest()
    oasst()
    hh()
    speed(completions)
