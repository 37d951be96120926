import json

import pytest

from rlhfkit.errors import InputError
from rlhfkit.store import ProjectSettings, add_items, create_project, import_items_file
from rlhfkit.store.projects import get_item, progress


def _pid(engine):
    return create_project(engine, ProjectSettings(name="imports"))


def test_import_native_items_with_gold(engine, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(
        json.dumps({"prompt": "2+2?", "response_a": "4", "response_b": "5", "gold": "A"})
        + "\n\n"
        + json.dumps({"prompt": "Write a limerick", "task_type": "demonstration"})
        + "\n"
    )
    pid = _pid(engine)
    assert import_items_file(engine, pid, path) == 2
    assert progress(engine, pid)["gold_items"] == 1
    item = get_item(engine, 1)
    assert (
        item["prompt"] == [{"role": "user", "content": "2+2?"}]
        and item["source"] == "items.jsonl:1"
    )


def test_import_trl_preferences_through_the_data_readers(engine, tmp_path):
    path = tmp_path / "prefs.jsonl"
    rec = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    path.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    pid = _pid(engine)
    assert import_items_file(engine, pid, path) == 2
    item = get_item(engine, 1)
    assert (item["response_a"], item["response_b"]) == ("Hello!", "Go away.")
    assert item["task_type"] == "comparison" and not item["is_gold"]


def test_import_demonstration_prompts(engine, tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"prompt": "Explain tides", "completion": "The moon..."}) + "\n")
    pid = _pid(engine)
    assert import_items_file(engine, pid, path, task_type="demonstration") == 1
    item = get_item(engine, 1)
    assert item["task_type"] == "demonstration" and item["response_a"] is None


def test_import_a_shared_hh_file(engine, shared_data):
    path = shared_data("hh-rlhf/harmless-base-dev.jsonl.gz")
    pid = _pid(engine)
    assert import_items_file(engine, pid, path) > 100


@pytest.mark.parametrize(
    "content,match",
    [
        ('{"prompt": "x", "response_a": "a"}\n', "response_b"),
        ('{"prompt": "x", "response_a": "a", "response_b": "b", "gold": "C"}\n', "gold"),
        ('{"prompt": "x", "response_a": "a", "response_b": "b", "colour": 1}\n', "colour"),
        ('{"prompt": [], "response_a": "a", "response_b": "b"}\n', "prompt"),
        (
            '{"prompt": [{"role": "god", "content": "x"}], "response_a": "a", "response_b": "b"}\n',
            "role",
        ),
        ('{"prompt": "x", "response_a": "' + "a" * 20001 + '", "response_b": "b"}\n', "response_a"),
        ('{"prompt": "x", "response_a": "a", "response_b": "b"}\n{oops\n', ":2:"),
        ("not json at all\n", "items.jsonl"),
    ],
)
def test_garbage_item_files_are_refused_whole(engine, tmp_path, content, match):
    path = tmp_path / "items.jsonl"
    path.write_text(content)
    pid = _pid(engine)
    with pytest.raises(InputError, match=match):
        import_items_file(engine, pid, path)
    assert progress(engine, pid)["items"] == 0


def test_missing_and_binary_files(engine, tmp_path):
    pid = _pid(engine)
    with pytest.raises(InputError, match="no such file"):
        import_items_file(engine, pid, tmp_path / "absent.jsonl")
    binary = tmp_path / "x.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError):
        import_items_file(engine, pid, binary)


@pytest.mark.parametrize("bad", [None, "x", [1], [{"prompt": "x", "task_type": "essay"}]])
def test_add_items_rejects_garbage(engine, bad):
    with pytest.raises(InputError):
        add_items(engine, _pid(engine), bad)
