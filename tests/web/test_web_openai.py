"""The OpenAI-compatible endpoints, driven by the real ``openai`` client against a uvicorn server
on loopback (temporary SQLite store, the tiny model and a tiny trained run): listing, whole and
streamed completions, sampling parameters, feedback by completion id into the export, and bad
requests answered with a clear 4xx in OpenAI's error shape, never a 500."""

import json
import socket
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

from rlhfkit.cli import main  # noqa: E402
from rlhfkit.settings import Settings  # noqa: E402
from rlhfkit.store import users  # noqa: E402
from rlhfkit.store.chat import get_completion  # noqa: E402
from rlhfkit.store.migrate import open_store  # noqa: E402

HI = [{"role": "user", "content": "Say hello."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_run(runs_dir, name="concise-run", personality="concise"):
    """A run directory as the trainers write it: runs/NAME/model plus personality.json."""
    from rlhfkit.models import tiny_policy

    policy = tiny_policy(seed=1)
    model_dir = runs_dir / name / "model"
    policy.model.save_pretrained(model_dir)
    policy.tokenizer.save_pretrained(model_dir)
    (runs_dir / name / "personality.json").write_text(json.dumps({"personality": personality}))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from rlhfkit.web.app import create_app

    tmp = tmp_path_factory.mktemp("openai")
    url = f"sqlite:///{tmp}/api.db"
    engine = open_store(url)
    alice = users.create_user(engine, "alice", "alice-password")
    bob = users.create_user(engine, "bob", "bob-password")
    runs = tmp / "runs"
    _tiny_run(runs)
    settings = Settings(database_url=url, secret_key="k", runs_dir=runs, chat_models="")
    app = create_app(settings)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield {
        "base": f"http://127.0.0.1:{port}/v1",
        "url": url,
        "engine": engine,
        "tmp": tmp,
        "alice": users.create_token(engine, alice),
        "bob": users.create_token(engine, bob),
    }
    uv.should_exit = True
    thread.join(timeout=10)


def _client(server, who="alice"):
    return openai.OpenAI(base_url=server["base"], api_key=server[who], max_retries=0, timeout=60)


def test_models_are_listed_and_retrieved(server):
    client = _client(server)
    ids = {m.id for m in client.models.list()}
    assert {"tiny", "concise-run"} <= ids
    run = client.models.retrieve("concise-run")
    assert run.owned_by == "rlhfkit" and run.model_extra["personality"] == "concise"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_completion_is_stored_and_honours_the_sampling_parameters(server):
    client = _client(server)
    ask = dict(model="tiny", messages=HI, max_tokens=12, temperature=1.0)
    first = client.chat.completions.create(seed=7, **ask)
    again = client.chat.completions.create(seed=7, **ask)
    other = client.chat.completions.create(seed=8, **ask)
    assert first.object == "chat.completion" and first.id.startswith("chatcmpl-")
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].message.content == again.choices[0].message.content  # seed
    assert first.choices[0].message.content != other.choices[0].message.content
    # the random tiny model never says EOS: it stops at exactly max_tokens
    assert first.choices[0].finish_reason == "length" and first.usage.completion_tokens == 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + 12
    # temperature 0 is greedy; top_p this small keeps only the likeliest token, the same thing
    greedy = client.chat.completions.create(model="tiny", messages=HI, max_tokens=12, temperature=0)
    nucleus = client.chat.completions.create(seed=1, top_p=1e-6, **ask)
    assert greedy.choices[0].message.content == nucleus.choices[0].message.content
    stored = get_completion(server["engine"], first.id)
    assert stored["reply"] == first.choices[0].message.content and stored["source"] == "api"
    assert stored["params"]["seed"] == 7 and stored["params"]["max_tokens"] == 12
    assert stored["prompt"] == HI
    # a trained run answers too (it is a different model: another reply)
    run = client.chat.completions.create(seed=7, **{**ask, "model": "concise-run"})
    assert run.model == "concise-run"
    assert run.choices[0].message.content != first.choices[0].message.content


def test_streaming_sends_chunks_then_done(server):
    client = _client(server)
    ask = dict(model="tiny", messages=HI, max_tokens=16, seed=3, temperature=1.0)
    whole = client.chat.completions.create(**ask).choices[0].message.content
    stream = client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **ask
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 2, "the reply should arrive in pieces"
    assert "".join(pieces) == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert get_completion(server["engine"], chunks[0].id)["reply"] == whole
    # the wire format: data: lines ending with [DONE]
    body = {**ask, "stream": True}
    raw = httpx.post(
        f"{server['base']}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {server['alice']}"},
        timeout=60,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_feedback_on_a_completion_id_reaches_the_export(server, tmp_path, capsys):
    client = _client(server)
    liked = client.chat.completions.create(model="tiny", messages=HI, max_tokens=6, seed=1)
    disliked = client.chat.completions.create(model="tiny", messages=HI, max_tokens=6, seed=2)
    headers = {"Authorization": f"Bearer {server['alice']}"}
    post = lambda body, h=headers: httpx.post(f"{server['base']}/feedback", json=body, headers=h)  # noqa: E731
    r = post({"completion_id": liked.id, "rating": "up"})
    assert r.status_code == 200 and r.json()["rating"] == "up"
    r = post({"completion_id": disliked.id, "rating": "down", "comment": "gibberish"})
    assert r.status_code == 200 and r.json()["model"] == "tiny"
    # someone else's completion is invisible; garbage is a 400, never a 500
    bob = {"Authorization": f"Bearer {server['bob']}"}
    assert post({"completion_id": liked.id, "rating": "down"}, bob).status_code == 404
    assert post({"completion_id": "chatcmpl-nope", "rating": "up"}).status_code == 404
    for body in ({"completion_id": liked.id, "rating": "meh"}, {"rating": "up"}, []):
        r = post(body)
        assert r.status_code == 400 and r.json()["error"]["message"], r.text

    out, pairs = tmp_path / "kto.jsonl", tmp_path / "pairs.jsonl"
    args = ["feedback", "export", "--out", str(out), "--pairs-out", str(pairs)]
    assert main([*args, "--model", "tiny", "--database-url", server["url"]]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] >= 1
    rows = {
        json.loads(x)["meta"]["completion_id"]: json.loads(x) for x in out.read_text().splitlines()
    }
    assert rows[liked.id]["label"] is True and rows[disliked.id]["label"] is False
    assert rows[disliked.id]["meta"]["comment"] == "gibberish"
    pair = [json.loads(x) for x in pairs.read_text().splitlines()]
    wanted = (liked.choices[0].message.content, disliked.choices[0].message.content)
    assert wanted in [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pair]


BAD_REQUESTS = [
    ("unknown model", {"model": "gpt-9"}, 404, "model_not_found"),
    ("empty messages", {"messages": []}, 400, None),
    ("too many messages", {"messages": HI * 65}, 400, None),
    ("huge message", {"messages": [{"role": "user", "content": "x" * 20_001}]}, 400, None),
    (
        "too many characters",
        {"messages": [{"role": "user", "content": "x" * 19_000}] * 4},
        400,
        "context_length_exceeded",
    ),
    ("empty content", {"messages": [{"role": "user", "content": " "}]}, 400, None),
    ("tool role", {"messages": [{"role": "tool", "content": "x"}]}, 400, None),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, None),
    ("max_tokens too large", {"max_tokens": 100_000}, 400, None),
    ("max_tokens zero", {"max_tokens": 0}, 400, None),
    ("temperature text", {"temperature": "hot"}, 400, None),
    ("temperature too high", {"temperature": 9}, 400, None),
    ("top_p zero", {"top_p": 0}, 400, None),
    ("messages as text", {"messages": "hi"}, 400, None),
    ("content as number", {"messages": [{"role": "user", "content": 5}]}, 400, None),
    ("model as list", {"model": ["tiny"]}, 400, None),
    ("two choices", {"n": 2}, 400, None),
    ("too many stops", {"stop": ["a", "b", "c", "d", "e"]}, 400, None),
]


@pytest.mark.parametrize("why,change,status,code", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx(server, why, change, status, code):
    body = {"model": "tiny", "messages": HI, "max_tokens": 4, **change}
    r = httpx.post(
        f"{server['base']}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {server['alice']}"},
        timeout=60,
    )
    assert r.status_code == status, (why, r.text)
    error = r.json()["error"]
    assert error["message"] and error["type"], why
    if code:
        assert error["code"] == code


def test_the_openai_client_raises_its_own_errors(server):
    client = _client(server)
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=HI)
    assert "tiny" in err.value.message  # the message names the models there are
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=HI, max_tokens=5000)
    with pytest.raises(openai.APIStatusError) as err:  # over the 1 MiB body limit
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x" * (1 << 20)}]
        )
    assert err.value.status_code == 413
    for key in ("", "not-a-token"):
        bad = openai.OpenAI(base_url=server["base"], api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
