import json

import pytest

from rlhfkit.errors import InputError
from rlhfkit.store.feedback import add_feedback, export_feedback, feedback_examples
from rlhfkit.store.users import create_user


def test_feedback_round_trip_to_unpaired_data(engine, tmp_path):
    uid = create_user(engine, "chatter", "password1")
    add_feedback(engine, "Hi", "Hello!", thumbs=1, model="m1", user_id=uid)
    add_feedback(
        engine, [{"role": "user", "content": "2+2?"}], "5", thumbs=-1, model="m2", comment="wrong"
    )
    assert [e.label for e in feedback_examples(engine)] == [True, False]
    assert len(feedback_examples(engine, model="m2")) == 1
    assert export_feedback(engine, tmp_path / "kto.jsonl") == 2
    first, second = (json.loads(x) for x in (tmp_path / "kto.jsonl").read_text().splitlines())
    assert first["prompt"] == [{"role": "user", "content": "Hi"}]
    assert first["completion"] == [{"role": "assistant", "content": "Hello!"}]
    assert first["label"] is True and first["rater_id"] == f"user-{uid}"
    assert second["label"] is False and second["meta"]["comment"] == "wrong"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(conversation="", reply="x", thumbs=1, model="m"), "conversation"),
        (dict(conversation="q", reply="x", thumbs=0, model="m"), "thumbs"),
        (dict(conversation="q", reply="x", thumbs=True, model="m"), "thumbs"),
        (dict(conversation="q", reply="x", thumbs=1, model=""), "model"),
        (dict(conversation="q", reply="x" * 20001, thumbs=1, model="m"), "reply"),
        (dict(conversation="q", reply="x", thumbs=1, model="m", comment="\x00"), "comment"),
    ],
)
def test_garbage_feedback_is_refused(engine, kwargs, match):
    kwargs = dict(kwargs)  # shared by both backends' runs
    with pytest.raises(InputError, match=match):
        add_feedback(engine, kwargs.pop("conversation"), kwargs.pop("reply"), **kwargs)
