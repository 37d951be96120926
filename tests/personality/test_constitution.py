"""Constitutional AI feedback: parsing constitutions, the critique/revise and judging loops on
the tiny model and against a fake OpenAI-compatible endpoint served on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlhfkit.data import read_examples, read_preferences
from rlhfkit.data.records import Example, PreferencePair
from rlhfkit.errors import InputError
from rlhfkit.personality.constitution import (
    LocalLabeler,
    builtin_constitutions,
    critique_and_revise,
    judge_pairs,
    load_constitution,
    make_labeler,
    parse_choice,
    parse_constitution,
    summary,
    write_demonstrations,
    write_judgments,
)

PROMPT = [{"role": "user", "content": "How do I boil an egg?"}]
PAIRS = [
    PreferencePair(PROMPT, "Put it in boiling water for 8 minutes.", "No.", item_id="1"),
    PreferencePair(PROMPT, "Boil water, add the egg, wait.", "Figure it out.", item_id="2"),
    PreferencePair(PROMPT, "Eggs boil in about 9 minutes.", "Go away.", item_id="3"),
]


# --- constitutions ------------------------------------------------------------------------------


def test_builtin_constitution_has_six_to_ten_principles():
    assert "helpful-harmless" in builtin_constitutions()
    c = load_constitution("helpful-harmless")
    assert 6 <= len(c.principles) <= 10
    assert c.rater_id == "constitution:helpful-harmless"
    assert {"helpful", "harmless", "honest"} <= {p.name for p in c.principles}
    assert all(p.text.endswith("?") for p in c.principles)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("## helpful\nWhich is better?\n", "<t>:1: no '# Title' line"),
        ("# T\n\nSome prose only.\n", "<t>: no principles"),
        ("# T\n## helpful\n\n## harmless\nWhich?\n", "<t>:2: principle 'helpful' has no text"),
        ("# T\n## a\nx?\n## a\ny?\n", "<t>:4: principle 'a' appears twice"),
        ("# T\n## Be Nice!\nx?\n", "<t>:2: principle name 'Be Nice!'"),
        ("# T\n## a\nx?\n# Another title\n", "<t>:4: unexpected heading"),
        ("# T\n## a\nx\x00?\n", "contains NUL bytes"),
    ],
)
def test_bad_constitutions_name_the_line(text, message):
    with pytest.raises(InputError, match=message.replace("?", r"\?")):
        parse_constitution(text, source="<t>")


def test_bad_constitution_files(tmp_path):
    with pytest.raises(InputError, match="no such constitution file or built-in"):
        load_constitution("no-such-constitution")
    with pytest.raises(InputError, match="no such constitution file"):
        load_constitution(tmp_path / "missing.md")
    binary = tmp_path / "binary.md"
    binary.write_bytes(b"# T\n\xff\xfe\n")
    with pytest.raises(InputError, match="binary.md: not UTF-8"):
        load_constitution(binary)
    big = tmp_path / "big.md"
    big.write_text("# T\n## a\n" + "x" * 200_000)
    with pytest.raises(InputError, match="big.md: 200009 bytes"):
        load_constitution(big)


# --- parsing free-text verdicts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("A", "A"),
        (" (B) ", "B"),
        ("B.", "B"),
        ("Answer: B", "B"),
        ("The better response is Response A, because it answers.", "A"),
        ("After weighing both, the better response is (B).", "B"),
        ("Response B is better since it is polite.", "B"),
        ("<think>Response A looks rude... maybe B</think>\nFinal answer: A", "A"),
        ("B is better.", "B"),
        ("A better response would explain more.", None),
        ("Both responses are fine.", None),
        ("Response A is good but Response B is better.", "B"),
        ("Answer: A. Actually, answer: B.", None),
        ("", None),
        ("\x00\x01 garbage {json: ]", None),
    ],
)
def test_parse_choice(text, choice):
    assert parse_choice(text) == choice


# --- the loops on the tiny model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_labeler():
    return LocalLabeler("tiny", batch_size=2)


def test_local_labeler_gives_probabilities_from_likelihoods(tiny_labeler):
    c = load_constitution("helpful-harmless")
    from rlhfkit.personality.constitution import judging_question

    q = judging_question(c.principles[0], PROMPT, "yes", "no")
    p = tiny_labeler.prefer_a([q, q])
    assert len(p) == 2 and p[0] == pytest.approx(p[1]) and 0.0 < p[0] < 1.0
    # the tiny tokenizer is byte-level: " A" is two tokens, so the multi-token path is used
    logps = tiny_labeler.option_logprobs(["x"], [" A", " B"])
    assert logps.shape == (1, 2) and (logps < 0).all()


def test_judging_on_the_tiny_model_writes_trl_records(tmp_path, tiny_labeler):
    c = load_constitution("helpful-harmless")
    judged = judge_pairs(tiny_labeler, c, PAIRS, principles="all", batch_size=4)
    assert len(judged) == len(PAIRS)
    names = {p.name for p in c.principles}
    for out, src in zip(judged, PAIRS, strict=True):
        assert out.rater_id == "constitution:helpful-harmless"
        assert {out.chosen, out.rejected} == {src.chosen, src.rejected}
        assert set(out.labels["chosen"]) == names
        for name in names:
            assert out.labels["chosen"][name] + out.labels["rejected"][name] == pytest.approx(1.0)
        assert 0.0 <= out.margin <= 1.0
        assert out.meta["agrees_with_input"] == (out.chosen == src.chosen)
    path = tmp_path / "ai.jsonl"
    assert write_judgments(judged, path) == 3
    back = read_preferences(path)
    assert [p.rater_id for p in back] == ["constitution:helpful-harmless"] * 3
    assert back[0].labels == judged[0].labels
    report = summary(judged)
    assert report["judged"] == 3 and set(report["per_principle"]) <= names


def test_one_sampled_principle_per_pair_by_default(tiny_labeler):
    c = load_constitution("helpful-harmless")
    judged = judge_pairs(tiny_labeler, c, PAIRS, seed=3)
    assert all(len(p.meta["principles"]) == 1 for p in judged)
    again = judge_pairs(tiny_labeler, c, PAIRS, seed=3)
    assert [p.meta["principles"] for p in judged] == [p.meta["principles"] for p in again]
    with pytest.raises(InputError, match="expected all, sample or one of helpful"):
        judge_pairs(tiny_labeler, c, PAIRS, principles="kindness")


def test_critique_and_revise_on_the_tiny_model(tmp_path, tiny_labeler):
    c = load_constitution("helpful-harmless")
    examples = [Example(PROMPT, "Go away."), Example(PROMPT, "")]
    demos = critique_and_revise(tiny_labeler, c, examples, max_tokens=6)
    # the random tiny model writes blanks: an item left with no text at all is dropped
    assert 1 <= len(demos) <= 2
    for demo in demos:
        assert demo.rater_id == "constitution:helpful-harmless"
        assert demo.completion.strip()
        assert {"principle", "original", "critique"} <= set(demo.meta)
    assert demos[0].meta["original"] == "Go away."
    path = tmp_path / "demos.jsonl"
    write_demonstrations(demos, path)
    assert {e.rater_id for e in read_examples(path)} == {"constitution:helpful-harmless"}


# --- a fake OpenAI-compatible endpoint on loopback ----------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    mode = "verdict"
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        content = self._content(body)
        if self.mode == "not-json":
            payload = b"<html>502 bad gateway</html>"
        elif self.mode == "no-choices":
            payload = json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode()
        elif self.mode == "error":
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "boom"}}')
            return
        else:
            payload = json.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                }
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _content(self, body) -> str:
        last = body["messages"][-1]["content"]
        if self.mode == "unparseable":
            return "Both replies have their merits."
        if "Response A:" in last:
            # prefer the reply that mentions boiling, wherever it is shown
            a = last.split("Response A:")[1].split("Response B:")[0]
            return "Answer: A" if "oil" in a else "After some thought, Response B is better."
        if last.startswith("Identify"):
            return "The reply is curt."
        if last.startswith("Rewrite"):
            return "Boil water, add the egg, and wait eight minutes."
        return "Put the egg in boiling water."

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    _Handler.mode = "verdict"
    _Handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_endpoint_labeler_judges_both_orders(endpoint, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    labeler = make_labeler(endpoint=endpoint, endpoint_model="judge-1")
    c = load_constitution("helpful-harmless")
    judged = judge_pairs(labeler, c, PAIRS, principles="helpful")
    assert len(_Handler.requests) == 6  # 3 pairs x 2 orders
    assert {r["model"] for r in _Handler.requests} == {"judge-1"}
    assert [p.chosen for p in judged] == [p.chosen for p in PAIRS]
    assert all(p.meta["method"] == "parse" and p.margin == 1.0 for p in judged)
    assert summary(judged)["agreement"] == 1.0


def test_endpoint_labeler_critiques_and_revises(endpoint):
    labeler = make_labeler(endpoint=endpoint, endpoint_model="m")
    demos = critique_and_revise(
        labeler, load_constitution("helpful-harmless"), [Example(PROMPT, "No.")]
    )
    assert demos[0].completion == "Boil water, add the egg, and wait eight minutes."
    assert demos[0].meta["critique"] == "The reply is curt."


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("not-json", "the chat completion failed \\(JSONDecodeError"),
        ("no-choices", "no choices\\[0\\].message.content"),
        ("error", "the chat completion failed \\(InternalServerError"),
        ("unparseable", "none of its 6 answers named response A or B"),
    ],
)
def test_endpoint_garbage_is_a_clear_error(endpoint, mode, message):
    _Handler.mode = mode
    labeler = make_labeler(endpoint=endpoint, endpoint_model="m")
    with pytest.raises(InputError, match=message):
        judge_pairs(labeler, load_constitution("helpful-harmless"), PAIRS)


def test_endpoint_arguments_are_checked():
    with pytest.raises(InputError, match="expected an http"):
        make_labeler(endpoint="ftp://x", endpoint_model="m")
    with pytest.raises(InputError, match="model name is required"):
        make_labeler(endpoint="http://127.0.0.1:9", endpoint_model="")


# --- command line -------------------------------------------------------------------------------


def test_judge_and_revise_cli_on_the_tiny_model(tmp_path, capsys):
    from rlhfkit.cli import main
    from rlhfkit.data import write_examples_jsonl, write_preferences_jsonl

    pairs = tmp_path / "pairs.jsonl"
    write_preferences_jsonl(PAIRS, pairs)
    out = tmp_path / "ai.jsonl"
    argv = ["personality", "judge", "helpful-harmless", "--pairs", str(pairs), "--out", str(out)]
    assert main([*argv, "--labeler", "tiny", "--principles", "harmless"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rater_id"] == "constitution:helpful-harmless" and result["judged"] == 3
    judged = read_preferences(out)
    assert all(set(p.labels["chosen"]) == {"harmless"} for p in judged)

    replies = tmp_path / "replies.jsonl"
    write_examples_jsonl([Example(PROMPT, "Go away.")], replies)
    demos = tmp_path / "demos.jsonl"
    argv = ["personality", "revise", "helpful-harmless", "--input", str(replies)]
    assert main([*argv, "--out", str(demos), "--labeler", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 1


def test_judge_cli_garbage_is_a_clear_error(tmp_path, capsys):
    from rlhfkit.cli import main

    bad = tmp_path / "bad.md"
    bad.write_text("no title here\n")
    out = tmp_path / "ai.jsonl"
    argv = ["personality", "judge", str(bad), "--pairs", "x.jsonl", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad.md:1: no '# Title' line" in err and "Traceback" not in err
    assert not out.exists()
