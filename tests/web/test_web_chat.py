"""The chat page: personality picker on a first visit, conversations, streamed replies stored
with the conversation, retries, thumbs and comments, privacy between users, escaping, and the
model registry behind it."""

import json

import pytest

from rlhfkit.store import chat as store_chat
from rlhfkit.store.errors import NotFound
from rlhfkit.web.serving import GenerationParams, ModelRegistry

XSS = "<script>alert('owned')</script>"


@pytest.fixture(autouse=True)
def _seeded():
    """Replies are sampled from torch's global generator: a fixed seed keeps each test's reply
    (its length, its stream of pieces) the same whichever tests ran before it."""
    import torch

    torch.manual_seed(0)


@pytest.fixture
def chat(platform, tmp_path):
    # Only the tiny model, whatever ./runs holds on this machine.
    platform.app.state.models = ModelRegistry(tmp_path / "runs", ["tiny"])
    return platform


def _csrf_of(html):
    return html.split('data-csrf="')[1].split('"')[0]


def _start(client, csrf, model="tiny"):
    r = client.post("/chat", data={"csrf_token": csrf, "model": model}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return int(r.headers["location"].rsplit("/", 1)[1])


def _events(response):
    return [json.loads(e[len("data: ") :]) for e in response.text.split("\n\n") if e]


def _say(client, cid, csrf, **body):
    body = {"max_tokens": 8, **body}
    return client.post(f"/chat/api/{cid}/messages", json=body, headers={"X-CSRF-Token": csrf})


def test_first_visit_asks_for_a_personality(chat):
    assert chat.client.get("/chat", follow_redirects=False).headers["location"] == "/login"
    rater = chat.login("rater1", "rater-password")
    page = rater.get("/chat").text
    assert "What personality do you want?" in page
    for name in ("concise", "warm-and-polite", "helpful-harmless"):
        assert f'id="personality-{name}"' in page
        assert f"rlhfkit personality train {name}" in page
    assert '<option value="tiny">' in page
    cid = _start(rater, chat.csrf(page))
    assert "What personality" not in rater.get("/chat").text  # not a first visit any more
    assert "What personality" in rater.get("/chat?welcome=1").text
    assert f'href="/chat/{cid}"' in rater.get("/chat").text


def test_a_streamed_reply_is_stored_rated_and_shown_escaped(chat):
    admin = chat.login("admin", "admin-password")  # any role may chat
    csrf = chat.csrf(admin.get("/chat").text)
    cid = _start(admin, csrf)
    r = _say(admin, cid, csrf, message=f"Hello {XSS}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r)
    assert events[0]["type"] == "start" and events[-1]["type"] == "done"
    deltas = [e["text"] for e in events if e["type"] == "delta"]
    assert len(deltas) > 1
    public_id = events[-1]["completion_id"]
    stored = store_chat.get_completion(chat.engine, public_id)
    assert stored["reply"] == "".join(deltas) and stored["conversation_id"] == cid
    assert stored["prompt"] == [{"role": "user", "content": f"Hello {XSS}"}]
    assert stored["source"] == "chat" and stored["params"]["max_tokens"] == 8

    # the second turn carries the whole conversation; a retry answers the same prompt again
    second = _events(_say(admin, cid, csrf, message="And again?"))[-1]["completion_id"]
    prompt = store_chat.get_completion(chat.engine, second)["prompt"]
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"]
    again = _events(_say(admin, cid, csrf, retry=True))
    assert again[-1]["type"] == "done", again[-1]
    retried = again[-1]["completion_id"]
    assert store_chat.get_completion(chat.engine, retried)["prompt"] == prompt

    rate = lambda body, token=csrf: admin.post(  # noqa: E731
        "/chat/api/feedback", json=body, headers={"X-CSRF-Token": token}
    )
    assert rate({"completion_id": public_id, "rating": "down", "comment": XSS}).status_code == 200
    assert rate({"completion_id": retried, "rating": "up"}).status_code == 200
    assert rate({"completion_id": retried, "rating": "sideways"}).status_code == 422
    assert rate({"completion_id": retried, "rating": "up"}, token="stale").status_code == 403

    page = admin.get(f"/chat/{cid}").text
    assert XSS not in page and "Hello &lt;script&gt;" in page
    assert page.count('class="msg assistant') == 3 and "earlier try" in page
    assert 'aria-pressed="true"' in page and "&lt;script&gt;alert" in page  # the comment
    dashboard = admin.get("/admin").text
    table = dashboard.split('id="feedback-counts"')[1].split("</table>")[0]
    assert "<td>tiny</td><td>2</td><td>1</td><td>1</td>" in table


def test_conversations_are_private_and_garbage_is_a_4xx(chat):
    one = chat.login("rater1", "rater-password")
    two = chat.login("rater2", "rater-password")
    csrf1, csrf2 = (_csrf_of_page(c) for c in (one, two))
    cid = _start(one, csrf1)
    done = _events(_say(one, cid, csrf1, message="secret"))[-1]
    assert two.get(f"/chat/{cid}").status_code == 404
    assert _say(two, cid, csrf2, message="hi").status_code == 404
    stolen = {"completion_id": done["completion_id"], "rating": "down"}
    r = two.post("/chat/api/feedback", json=stolen, headers={"X-CSRF-Token": csrf2})
    assert r.status_code == 404
    assert _say(one, cid, "", message="no token").status_code == 403
    for body in (
        {"message": ""},
        {"message": "x" * 20_001},
        {"message": 5},
        {"message": "hi", "max_tokens": 10_000},
        {"message": "hi", "temperature": -1},
        {"message": "hi", "extra": 1},
    ):
        r = _say(one, cid, csrf1, **body)
        assert 400 <= r.status_code < 500, (body, r.status_code)
        assert "detail" in r.json()
    bad_model = one.post("/chat", data={"csrf_token": csrf1, "model": "gpt-9"})
    assert bad_model.status_code == 404 and "tiny" in bad_model.text
    fresh = _start(one, csrf1)
    assert _say(one, fresh, csrf1, retry=True).status_code == 422  # nothing to retry yet
    assert one.get("/chat/99999").status_code == 404


def _csrf_of_page(client):
    return client.get("/chat").text.split('name="csrf_token" value="')[1].split('"')[0]


def test_registry_finds_runs_and_honours_the_allowed_list(tmp_path):
    from rlhfkit.models import tiny_policy

    runs = tmp_path / "runs"
    for name in ("warm", "tiny"):
        policy = tiny_policy()
        policy.model.save_pretrained(runs / name / "model")
        policy.tokenizer.save_pretrained(runs / name / "model")
    (runs / "warm" / "personality.json").write_text('{"personality": "warm-and-polite"}')
    (runs / "half-written" / "model").mkdir(parents=True)  # no config.json: not a model yet
    everything = {m.name: m for m in ModelRegistry(runs).available()}
    assert {"tiny", "warm", "run:tiny"} <= set(everything) and "half-written" not in everything
    assert everything["warm"].personality == "warm-and-polite"
    only = ModelRegistry(runs, ["warm", str(runs / "tiny" / "model"), "nope"])
    assert [m.name for m in only.available()] == ["warm", str(runs / "tiny" / "model")]
    with pytest.raises(NotFound, match="expected one of warm"):
        only.resolve("tiny")
    job = only.prepare("warm", [{"role": "user", "content": "Hi"}], GenerationParams(max_tokens=3))
    assert len(job.run()) > 0 and job.completion_tokens == 3
    # a prompt beyond the context window: refused, or cut to its end when asked
    long = [{"role": "user", "content": "x" * 1100}]
    with pytest.raises(Exception, match="context"):
        only.prepare("warm", long, GenerationParams(max_tokens=8))
    cut = only.prepare("warm", long, GenerationParams(max_tokens=8), keep_last_tokens=True)
    assert cut.prompt_tokens == 1024 - 8


def test_seed_and_stop_strings(tmp_path):
    registry = ModelRegistry(tmp_path, ["tiny"])
    hi = [{"role": "user", "content": "Hi"}]
    params = dict(max_tokens=24, temperature=1.0, seed=5)
    full = registry.prepare("tiny", hi, GenerationParams(**params)).run()
    assert registry.prepare("tiny", hi, GenerationParams(**params)).run() == full
    stop = full[6:9]
    job = registry.prepare("tiny", hi, GenerationParams(**params, stop=(stop,)))
    pieces = list(job.stream())
    assert job.text == "".join(pieces) == full[: full.find(stop)]
    assert job.finish_reason == "stop" and stop not in job.text


def test_a_sampled_nul_never_reaches_the_store(chat, monkeypatch):
    # Byte-level vocabularies can sample a NUL, which PostgreSQL cannot store: make every
    # piece of the reply end with one and check that the reply is still stored and shown.
    from rlhfkit.web import serving

    real = serving._token_streamer

    def with_nul(tokenizer):
        streamer = real(tokenizer)
        emit = streamer.on_finalized_text
        streamer.on_finalized_text = lambda text, stream_end=False: emit(
            text + "\x00" if text else text, stream_end
        )
        return streamer

    monkeypatch.setattr(serving, "_token_streamer", with_nul)
    one = chat.login("rater1", "rater-password")
    csrf = _csrf_of_page(one)
    cid = _start(one, csrf)
    events = _events(_say(one, cid, csrf, message="hi"))
    assert events[-1]["type"] == "done", events[-1]
    reply = store_chat.get_completion(chat.engine, events[-1]["completion_id"])["reply"]
    assert reply and "\x00" not in reply
    assert all("\x00" not in e.get("text", "") for e in events)
