"""Simulated rater pools at work: offline, or through the platform's HTTP API like people.

Both paths judge with the same function, :func:`rlhfkit.raters.personas.decide`:

- :func:`simulate_judgments` judges candidate pairs in memory (k raters per item, random
  presentation order), for tests and quick studies of the statistics;
- :func:`simulate_pool` (``rlhfkit raters simulate``) creates rater accounts through the admin
  API (or takes given tokens); each simulated rater logs in with its password, fills in its
  consented profile with the persona's demographic tags, then asks for its next task, judges
  the two responses in the order shown, and submits choice, strength, labels, time on task and
  a fresh client key, exactly as the rater page does. Every experiment thereby exercises the
  queue, the overlap rule, gold items, idempotent submission and the ledger.

Simulated time is not slept: raters take turns in order of their simulated clocks (a fast
rater does more tasks), and ``time_scale`` > 0 sleeps that fraction of each simulated second.
The platform caps a claimed time on task at the wall time since the task was issued (a rule
meant for people), so without sleeping the stored times are the real, short ones; the summary
keeps the simulated seconds per rater.

:class:`LocalPlatform` starts a server process on a free loopback port with a fresh SQLite
database and an admin token, for experiments, the demo and tests.

Example::

    with LocalPlatform() as platform:
        pid = create_project(platform.base_url, platform.admin_token, "demo", items)
        summary = simulate_pool(load_pool("configs/pools/balanced.yaml"), platform.base_url,
                                pid, platform.admin_token, max_tasks=200, seed=0)
        export_preferences(platform.base_url, platform.admin_token, pid, "prefs.jsonl")
"""

from __future__ import annotations

import heapq
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.data.records import Message, PreferencePair
from rlhfkit.errors import InputError
from rlhfkit.raters.personas import Persona, Pool, attribute_values, decide


def _prompt(prompt: str | list[Message]) -> list[Message]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _draw_tags(persona: Persona, rng: np.random.Generator) -> dict[str, str]:
    return {
        k: (v[int(rng.integers(len(v)))] if isinstance(v, list) else v)
        for k, v in persona.tags.items()
    }


# --- offline ------------------------------------------------------------------------------------


def simulate_judgments(
    pool: Pool,
    items: list[tuple[str | list[Message], str, str]],
    overlap_k: int = 3,
    seed: int = 0,
) -> list[PreferencePair]:
    """Judge ``(prompt, response_a, response_b)`` items in memory: each item by ``overlap_k``
    different raters of the pool, each shown the pair in a random order.

    Returns one :class:`PreferencePair` per judgment (ties included, ``tie=True``) with
    ``rater_id`` ``sim-NNN-<persona>``, ``item_id``, the strength as ``margin``, per-response
    labels, and ``meta`` holding ``shown_first`` (what :mod:`rlhfkit.raters.bias` reads),
    ``choice`` (A, B or tie in the item's terms), ``persona``, ``lapsed`` and ``seconds``.

    Example::

        >>> pool = Pool("p", 3, [Persona("long", {"length": 2.0})], [1.0])
        >>> pairs = simulate_judgments(pool, [("Hi?", "Hello there, friend.", "Hi.")], 3)
        >>> sorted(p.chosen for p in pairs)
        ['Hello there, friend.', 'Hello there, friend.', 'Hello there, friend.']
    """
    raters = pool.assign()
    if not 1 <= overlap_k <= len(raters):
        raise InputError(
            f"overlap_k: expected 1..{len(raters)} (the pool's raters), got {overlap_k}"
        )
    rng = np.random.default_rng(seed)
    texts = [t for _, a, b in items for t in (a, b)]
    values = attribute_values(pool.attributes, texts)
    pairs = []
    for i, (prompt, a, b) in enumerate(items):
        va = {k: float(v[2 * i]) for k, v in values.items()}
        vb = {k: float(v[2 * i + 1]) for k, v in values.items()}
        for r in rng.choice(len(raters), size=overlap_k, replace=False):
            persona = raters[int(r)]
            a_first = bool(rng.random() < 0.5)
            first, second = (va, vb) if a_first else (vb, va)
            d = decide(persona, first, second, rng)
            first_text, second_text = (a, b) if a_first else (b, a)
            chosen_first = d.choice != "second"  # a tie keeps the shown order
            chosen, rejected = (
                (first_text, second_text) if chosen_first else (second_text, first_text)
            )
            lab_c, lab_r = d.labels if chosen_first else d.labels[::-1]
            pairs.append(
                PreferencePair(
                    prompt=_prompt(prompt),
                    chosen=chosen,
                    rejected=rejected,
                    rater_id=f"sim-{int(r):03d}-{persona.name}",
                    labels={"chosen": lab_c, "rejected": lab_r},
                    margin=None if d.strength is None else float(d.strength),
                    tie=d.choice == "tie",
                    item_id=str(i),
                    source=f"simulated:{pool.name}",
                    meta={
                        "shown_first": "chosen" if chosen_first else "rejected",
                        # A/B name the item's responses whatever the order shown (the
                        # platform's convention): comparable across the raters of an item.
                        "choice": "tie" if d.choice == "tie" else "A" if chosen == a else "B",
                        "persona": persona.name,
                        "lapsed": d.lapsed,
                        "seconds": round(d.seconds, 3),
                    },
                )
            )
    return pairs


_CONTENT = [
    "Start by writing down what you already know about the problem.",
    "The main cost is time rather than money.",
    "Most people find the second approach easier to maintain.",
    "Water boils at a lower temperature at high altitude.",
    "A short walk after meals helps digestion.",
    "The library opens at nine on weekdays.",
    "Keep a copy of the original file before you change it.",
    "Prices usually rise in the summer months.",
    "The recipe needs two eggs and a cup of flour.",
    "Check the cable before you replace the device.",
    "Regular practice matters more than long sessions.",
    "The train is faster, but the bus is cheaper.",
    "Label each box with the room it belongs to.",
    "Plants on a north window need less water.",
    "Save your work often when the battery is low.",
    "The report is due at the end of the month.",
]
_POLITE_OPEN = ["Thank you for asking!", "Great question, thanks!", "Happy to help!"]
_POLITE_CLOSE = ["I hope this helps.", "Thanks again, and good luck!"]
_HEDGES = ["I think", "It might be that", "Perhaps", "I'm not entirely sure, but"]
_REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I cannot assist with this request.",
    "Sorry, I won't be able to provide that.",
]


def synthetic_items(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` candidate pairs of made-up replies whose length, politeness, hedging, refusal and
    formatting vary independently: pairs on which a bias profile can separate the attributes
    (tests, smoke runs), with no model needed.

    Example::

        >>> len(synthetic_items(4)), synthetic_items(1, seed=3) == synthetic_items(1, seed=3)
        (4, True)
    """
    rng = np.random.default_rng(seed)

    def reply() -> str:
        picks = rng.choice(len(_CONTENT), size=int(rng.integers(1, 13)), replace=True)
        sentences = [_CONTENT[int(j)] for j in picks]
        if rng.random() < 0.35:
            h = _HEDGES[int(rng.integers(len(_HEDGES)))]
            sentences[0] = f"{h} {sentences[0][0].lower()}{sentences[0][1:]}"
        if rng.random() < 0.3:
            body = "\n".join(f"- {s}" for s in sentences)
        else:
            body = " ".join(sentences)
        if rng.random() < 0.15:
            body = _REFUSALS[int(rng.integers(len(_REFUSALS)))] + (
                " " + sentences[0] if rng.random() < 0.5 else ""
            )
        if rng.random() < 0.4:
            body = f"{_POLITE_OPEN[int(rng.integers(len(_POLITE_OPEN)))]} {body}"
        if rng.random() < 0.3:
            body = f"{body} {_POLITE_CLOSE[int(rng.integers(len(_POLITE_CLOSE)))]}"
        return body

    return [(f"Question {i}: what should I know?", reply(), reply()) for i in range(n)]


# --- through the platform's API -----------------------------------------------------------------


class PlatformClient:
    """A bearer-token client of the platform's JSON API that turns failures into
    :class:`InputError` messages naming the server and the request."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.requests = 0
        self.retries = 0

    def with_token(self, token: str) -> PlatformClient:
        return PlatformClient(self.base_url, token, self.timeout)

    def call(self, method: str, path: str, body: Any = None, ok=(200, 201, 204), tries: int = 3):
        """One request; transport errors are retried (every write we send is idempotent)."""
        import httpx

        for attempt in range(tries):
            try:
                self.requests += 1
                r = self.http.request(method, "/api/v1" + path, json=body)
                break
            except httpx.TransportError as exc:
                if attempt == tries - 1:
                    raise InputError(
                        f"{self.base_url}: cannot reach the platform ({exc.__class__.__name__});"
                        " expected a running `rlhfkit serve`"
                    ) from None
                self.retries += 1
                time.sleep(0.2 * (attempt + 1))
        if r.status_code not in ok:
            detail = r.text[:300]
            if r.status_code == 401:
                detail = "the token or password was refused"
            raise InputError(f"{self.base_url}: {method} {path} -> {r.status_code}: {detail}")
        return r

    def close(self) -> None:
        self.http.close()


@dataclass
class _Rater:
    persona: Persona
    client: PlatformClient
    username: str
    user_id: int | None
    tags: dict[str, str]
    rng: np.random.Generator
    clock: float = 0.0
    judgments: int = 0
    lapses: int = 0
    choices: Counter = field(default_factory=Counter)
    stopped: str | None = None


def simulate_pool(
    pool: Pool,
    base_url: str,
    project_id: int,
    admin_token: str | None = None,
    max_tasks: int | None = None,
    seed: int = 0,
    *,
    rater_tokens: list[str] | None = None,
    time_scale: float = 0.0,
) -> dict[str, Any]:
    """Let ``pool`` work on project ``project_id`` of the platform at ``base_url``.

    With ``admin_token`` the pool's raters are created as accounts (random passwords), invited
    to the project, and each logs in through ``/auth/token``; with ``rater_tokens`` those
    (already invited) accounts are used instead, personas assigned in the pool's proportions.
    Raters work until the queue has nothing left for them or ``max_tasks`` judgments were
    submitted in all. Returns a summary: judgments, choices, per-rater counts and simulated
    seconds, requests and wall time.

    Example::

        summary = simulate_pool(pool, "http://127.0.0.1:8000", 1, admin_token, max_tasks=100)
        summary["judgments"]   # 100
    """
    if (admin_token is None) == (rater_tokens is None):
        raise InputError("simulate: give an admin token (to create raters) or rater tokens")
    if max_tasks is not None and max_tasks < 0:
        raise InputError(f"--max-tasks: expected a number >= 0, got {max_tasks}")
    if time_scale < 0:
        raise InputError(f"--time-scale: expected a number >= 0, got {time_scale}")
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    base = PlatformClient(base_url)
    raters: list[_Rater] = []
    done = 0
    try:
        raters.extend(_enlist(pool, base, project_id, admin_token, rater_tokens, rng))
        project = raters[0].client.call("GET", f"/projects/{project_id}").json()
        label_set = project["label_set"]
        queue = [(r.clock, i) for i, r in enumerate(raters)]
        heapq.heapify(queue)
        while queue and (max_tasks is None or done < max_tasks):
            _, i = heapq.heappop(queue)
            rater = raters[i]
            seconds = _work_one(rater, project_id, label_set, time_scale)
            if seconds is None:
                continue
            done += 1
            rater.clock += seconds
            heapq.heappush(queue, (rater.clock, i))
    finally:
        base.close()
        for r in raters:
            r.client.close()
    wall = time.perf_counter() - started
    requests = base.requests + sum(r.client.requests for r in raters)
    choices = sum((r.choices for r in raters), Counter())
    return {
        "pool": pool.summary(),
        "project_id": project_id,
        "seed": seed,
        "judgments": done,
        "choices": dict(choices),
        "lapses": sum(r.lapses for r in raters),
        "requests": requests,
        "retries": base.retries + sum(r.client.retries for r in raters),
        "wall_s": round(wall, 3),
        "judgments_per_s": round(done / wall, 2) if wall > 0 else None,
        "raters": [
            {
                "username": r.username,
                "user_id": r.user_id,
                "persona": r.persona.name,
                "tags": r.tags,
                "judgments": r.judgments,
                "lapses": r.lapses,
                "simulated_seconds": round(r.clock, 1),
                "stopped": r.stopped,
            }
            for r in raters
        ],
    }


def _enlist(
    pool: Pool,
    base: PlatformClient,
    project_id: int,
    admin_token: str | None,
    rater_tokens: list[str] | None,
    rng: np.random.Generator,
) -> list[_Rater]:
    """Accounts for the pool's raters: created, invited and logged in, or from tokens."""
    raters = []
    if rater_tokens is not None:
        if not rater_tokens:
            raise InputError("--rater-token: expected at least one token")
        for token, persona in zip(rater_tokens, pool.assign(len(rater_tokens)), strict=True):
            client = base.with_token(token)
            me = client.call("GET", "/me").json()
            raters.append(_Rater(persona, client, me["username"], me["id"], {}, _child(rng)))
    else:
        admin = base.with_token(admin_token)
        try:
            admin.call("GET", f"/projects/{project_id}")
            run = uuid.uuid4().hex[:6]
            for n, persona in enumerate(pool.assign()):
                username = f"sim-{run}-{n:03d}-{persona.name}"[:64]
                password = secrets.token_urlsafe(18)
                user = admin.call(
                    "POST", "/users", {"username": username, "password": password, "role": "rater"}
                ).json()
                admin.call("POST", f"/projects/{project_id}/members", {"user_id": user["id"]})
                # Log in the way a script of a person would: username and password for a token.
                token = base.call(
                    "POST", "/auth/token", {"username": username, "password": password}
                ).json()["token"]
                client = base.with_token(token)
                raters.append(_Rater(persona, client, username, user["id"], {}, _child(rng)))
        finally:
            admin.close()
    for r in raters:
        r.tags = _draw_tags(r.persona, r.rng)
        if r.tags:
            r.client.call("PUT", "/me/profile", {"consent": True, **r.tags})
        # Raters start at staggered moments, as people do, so the first tasks spread out.
        r.clock = float(r.rng.random() * r.persona.seconds_per_task)
    return raters


def _child(rng: np.random.Generator) -> np.random.Generator:
    return np.random.default_rng(int(rng.integers(2**63)))


def _work_one(rater: _Rater, project_id: int, label_set: list[str], scale: float) -> float | None:
    """Ask for a task and judge it; the simulated seconds taken, or None when done."""
    r = rater.client.call("POST", f"/projects/{project_id}/tasks/next")
    if r.status_code == 204:
        rater.stopped = "queue empty"
        return None
    task = r.json()
    if task["task_type"] != "comparison":
        # A demonstration needs a written reply; personas only compare, so this rater stops
        # (the open assignment expires and goes back to the queue for a person).
        rater.stopped = "demonstration task"
        return None
    shown = task["responses"]  # left to right, ids A/B
    texts = [resp["text"] for resp in shown]
    values = attribute_values(rater.persona.attributes, texts)
    first = {k: float(v[0]) for k, v in values.items()}
    second = {k: float(v[1]) for k, v in values.items()}
    d = decide(rater.persona, first, second, rater.rng, label_set)
    ids = [resp["id"] for resp in shown]
    choice = {"first": ids[0], "second": ids[1], "tie": "tie"}[d.choice]
    if scale > 0:
        time.sleep(d.seconds * scale)
    body = {
        "client_key": uuid.uuid4().hex,
        "choice": choice,
        "strength": d.strength,
        "labels": {ids[0]: d.labels[0], ids[1]: d.labels[1]},
        "time_on_task_ms": int(d.seconds * 1000),
    }
    rater.client.call("POST", f"/assignments/{task['assignment_id']}/judgment", body)
    rater.judgments += 1
    rater.lapses += int(d.lapsed)
    rater.choices[d.choice] += 1
    return d.seconds


def create_project(
    base_url: str,
    admin_token: str,
    name: str,
    items: list[tuple[str | list[Message], str, str]],
    *,
    overlap_k: int = 3,
    gold_share: float = 0.0,
    **settings: Any,
) -> int:
    """Create a comparison project through the admin API and add ``(prompt, a, b)`` items;
    returns its id. ``settings`` are further project fields (label_set, pay, ...)."""
    client = PlatformClient(base_url, admin_token)
    try:
        body = {"name": name, "overlap_k": overlap_k, "gold_share": gold_share, **settings}
        pid = client.call("POST", "/projects", body).json()["id"]
        rows = [
            {"prompt": _prompt(p), "response_a": a, "response_b": b, "source": f"candidate-{i}"}
            for i, (p, a, b) in enumerate(items)
        ]
        for start in range(0, len(rows), 1000):
            client.call("POST", f"/projects/{pid}/items", {"items": rows[start : start + 1000]})
        return int(pid)
    finally:
        client.close()


def export_preferences(
    base_url: str, admin_token: str, project_id: int, out: str | Path, include_ties: bool = False
) -> int:
    """Download the project's preference export (TRL jsonl) through the admin API and write it
    to ``out``; returns the number of pairs.

    Each record's ``meta.shown_first`` (``chosen``/``rejected``) is filled in from the
    project's judgments (choice and shown order) where the export does not carry it, so that
    a bias profile of the file can estimate the position effect.
    """
    client = PlatformClient(base_url, admin_token)
    try:
        query = "?include_ties=true" if include_ties else ""
        text = client.call("GET", f"/projects/{project_id}/export/preferences{query}").text
        judged = client.call("GET", f"/projects/{project_id}/judgments").json()
    finally:
        client.close()
    by_id = {j["id"]: j for j in judged}
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        meta = rec.get("meta") or {}
        j = by_id.get(_judgment_id(rec.get("source")))
        if "shown_first" not in meta and j is not None:
            chosen_side = "B" if j["choice"] == "B" else "A"  # the export's rule for ties
            meta["shown_first"] = "chosen" if j["shown_order"][0] == chosen_side else "rejected"
        rec["meta"] = meta
        records.append(rec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    tmp.replace(out)
    return len(records)


def _judgment_id(source: Any) -> int | None:
    # The store writes source = "rlhfkit-store:project/P/judgment/J".
    if isinstance(source, str) and "/judgment/" in source:
        tail = source.rsplit("/judgment/", 1)[1]
        return int(tail) if tail.isdigit() else None
    return None


# --- a server on loopback -----------------------------------------------------------------------


class LocalPlatform:
    """``rlhfkit serve`` as a child process on a free loopback port, with its own SQLite
    database (in a temporary directory unless ``database_url`` is given) and an admin account
    whose API token is ``admin_token``. Use as a context manager; ``stop()`` ends it.

    Example::

        with LocalPlatform() as platform:
            print(platform.base_url, platform.admin_token)
    """

    def __init__(self, database_url: str | None = None, startup_timeout: float = 60.0):
        self._tmp = None if database_url else tempfile.TemporaryDirectory(prefix="rlhfkit-")
        self.database_url = database_url or f"sqlite:///{self._tmp.name}/platform.db"
        self.startup_timeout = startup_timeout
        self.port = 0
        self.base_url = ""
        self.admin_token = ""
        self.log_path = Path(self._tmp.name if self._tmp else tempfile.gettempdir()) / (
            f"rlhfkit-serve-{os.getpid()}-{uuid.uuid4().hex[:6]}.log"
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalPlatform:
        from rlhfkit.store.migrate import open_store
        from rlhfkit.store.users import create_user

        # The first admin is made in the database, as `rlhfkit admin create-user` does.
        engine = open_store(self.database_url)
        username, password = f"admin-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
        create_user(engine, username, password, "admin")
        engine.dispose()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rlhfkit.cli", "serve", "--port", str(self.port)],
                env={**os.environ, "RLHFKIT_DATABASE_URL": self.database_url},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches every worker
            )
        deadline = time.monotonic() + self.startup_timeout
        client = PlatformClient(self.base_url)
        try:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        tail = self.log_path.read_text(errors="replace")[-2000:]
                        self.stop()
                        raise InputError(f"platform server did not start:\n{tail}") from None
                    time.sleep(0.1)
            self.admin_token = client.call(
                "POST", "/auth/token", {"username": username, "password": password}
            ).json()["token"]
        finally:
            client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalPlatform:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
