"""Conversations, completions, ratings by completion id, counts per model, and the feedback
export: KTO labels and preference pairs from hand-made ratings."""

import json

import pytest

from rlhfkit.errors import InputError
from rlhfkit.store import chat
from rlhfkit.store.errors import NotFound
from rlhfkit.store.feedback import (
    add_feedback,
    export_feedback_files,
    feedback_counts,
    feedback_pairs,
    rate_completion,
)
from rlhfkit.store.users import create_user, get_user

HI = [{"role": "user", "content": "Hi"}]


def _completion(engine, reply, user_id, prompt=HI, model="m1", **kw):
    public_id = chat.new_public_id()
    chat.add_completion(
        engine, public_id, model=model, prompt=prompt, reply=reply, user_id=user_id, **kw
    )
    return public_id


def test_conversation_history_follows_the_latest_try(engine):
    uid = create_user(engine, "chatter", "password1")
    cid = chat.create_conversation(engine, uid, "tiny")
    assert chat.history(engine, cid) == ([], 0)
    _completion(engine, "Hello", uid, conversation_id=cid, turn=0, source="chat")
    retry = _completion(engine, "Hey there", uid, conversation_id=cid, turn=0, source="chat")
    messages, turn = chat.history(engine, cid)
    assert turn == 1 and messages == [*HI, {"role": "assistant", "content": "Hey there"}]
    assert chat.last_prompt(engine, cid) == (HI, 0)
    rate_completion(engine, retry, get_user(engine, uid), thumbs=1)
    rows = chat.turns(engine, cid)
    assert [(r["reply"], r["thumbs"]) for r in rows] == [("Hello", None), ("Hey there", 1)]
    assert chat.list_conversations(engine, uid)[0]["replies"] == 2
    # a blank reply is not part of the history the next turn sees
    second = [*messages, {"role": "user", "content": "Still there?"}]
    _completion(engine, " \n", uid, prompt=second, conversation_id=cid, turn=1, source="chat")
    assert chat.history(engine, cid) == (second, 2)
    other = create_user(engine, "other", "password1")
    with pytest.raises(NotFound):
        chat.get_conversation(engine, cid, other)


def test_rating_is_owner_only_and_replaces_the_earlier_rating(engine):
    uid = create_user(engine, "owner", "password1")
    stranger = get_user(engine, create_user(engine, "stranger", "password1"))
    admin = get_user(engine, create_user(engine, "boss", "password1", "admin"))
    owner = get_user(engine, uid)
    cid = _completion(engine, "Hello", uid)
    with pytest.raises(NotFound):
        rate_completion(engine, cid, stranger, thumbs=1)
    with pytest.raises(NotFound):
        rate_completion(engine, "chatcmpl-nope", owner, thumbs=1)
    rate_completion(engine, cid, owner, thumbs=1)
    rate_completion(engine, cid, owner, thumbs=-1, comment="too short")
    rate_completion(engine, cid, admin, thumbs=-1)
    counts = feedback_counts(engine)
    assert counts == [
        {"model": "m1", "total": 1, "up": 0, "down": 1, "comments": 0, "liked_share": 0.0}
    ]
    for bad in (0, 2, True, "up"):
        with pytest.raises(InputError, match="rating"):
            rate_completion(engine, cid, owner, thumbs=bad)
    with pytest.raises(InputError, match="comment"):
        rate_completion(engine, cid, owner, thumbs=1, comment="x" * 2001)


def test_export_writes_kto_labels_and_pairs(engine, tmp_path):
    a = get_user(engine, create_user(engine, "alice", "password1"))
    b = get_user(engine, create_user(engine, "bob", "password1"))
    # "Hi": one liked and two disliked replies (one disliked twice) -> 2 pairs
    good = _completion(engine, "Hello! How can I help?", a["id"])
    bad1 = _completion(engine, "go away", a["id"])
    bad2 = _completion(engine, "go away", b["id"], model="m2")
    bad3 = _completion(engine, "...", b["id"], model="m2")
    # "2+2?": only liked -> no pair; a reply liked by one and disliked by another -> no pair
    sums = [{"role": "user", "content": "2+2?"}]
    four = _completion(engine, "4", a["id"], prompt=sums)
    four_again = _completion(engine, "4", b["id"], prompt=sums)
    for public_id, who, thumbs in [
        (good, a, 1),
        (bad1, a, -1),
        (bad2, b, -1),
        (bad3, b, -1),
        (four, a, 1),
        (four_again, b, -1),
    ]:
        rate_completion(engine, public_id, who, thumbs=thumbs)
    add_feedback(engine, "Hi", "Hi yourself", thumbs=1, model="m1")  # plain text prompt = HI

    kto, dpo = tmp_path / "kto.jsonl", tmp_path / "pairs.jsonl"
    result = export_feedback_files(engine, kto, pairs_out=dpo)
    assert result == {"examples": 7, "out": str(kto), "pairs": 4, "pairs_out": str(dpo)}
    examples = [json.loads(x) for x in kto.read_text().splitlines()]
    assert [e["label"] for e in examples] == [True, False, False, False, True, False, True]
    assert examples[0]["completion"] == [{"role": "assistant", "content": "Hello! How can I help?"}]
    assert examples[0]["meta"]["completion_id"] == good
    assert examples[2]["rater_id"] == f"user-{b['id']}"
    pairs = [json.loads(x) for x in dpo.read_text().splitlines()]
    got = {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs}
    assert got == {
        ("Hello! How can I help?", "go away"),
        ("Hello! How can I help?", "..."),
        ("Hi yourself", "go away"),
        ("Hi yourself", "..."),
    }
    assert all(p["prompt"] == HI for p in pairs)
    same_rater = [p for p in pairs if p["rater_id"] is not None]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in same_rater] == [
        ("Hello! How can I help?", "go away")
    ]
    # --model keeps one model's ratings: m2 has only dislikes, so no pairs
    only = export_feedback_files(engine, kto, pairs_out=dpo, model="m2")
    assert only["examples"] == 2 and only["pairs"] == 0 and dpo.read_text() == ""
    m1 = {(p.chosen, p.rejected) for p in feedback_pairs(engine, model="m1")}
    assert m1 == {("Hello! How can I help?", "go away"), ("Hi yourself", "go away")}


def test_garbage_completions_are_refused(engine):
    uid = create_user(engine, "c", "password1")
    for kwargs, match in [
        (dict(prompt=[], reply="x"), "prompt"),
        (dict(prompt=[{"role": "robot", "content": "x"}], reply="x"), "role"),
        (dict(prompt=HI, reply=None), "reply"),
        (dict(prompt=HI, reply="x", finish_reason="tired"), "finish_reason"),
        (dict(prompt=HI, reply="x", source="email"), "source"),
        (dict(prompt=HI, reply="x" * 20_001), "reply"),
    ]:
        with pytest.raises(InputError, match=match):
            chat.add_completion(engine, chat.new_public_id(), model="m", user_id=uid, **kwargs)
    with pytest.raises(InputError, match="model"):
        chat.create_conversation(engine, uid, "")
