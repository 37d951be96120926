"""Constitutional AI feedback: an AI labeler that critiques, revises and judges against written
principles (Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback").

A **constitution** is a markdown file in ``configs/constitutions/``: a ``# Title``, optional
prose, then one ``## name`` section per principle whose text is the question the labeler
answers ("Which response is less harmful: ...?").

The **labeler** is any local causal LM (``default``, a model directory, ``tiny``) or any
OpenAI-compatible chat endpoint (``base_url`` + ``model``; the key from ``OPENAI_API_KEY``).

- :func:`critique_and_revise` (supervised phase): for each reply, the labeler critiques it
  against a principle and rewrites it; the revisions are demonstrations (``Example`` records,
  ``rater_id = "constitution:NAME"``) for SFT.
- :func:`judge_pairs` (AI feedback phase): for each pair, the labeler says which reply better
  meets a principle. A local model is not asked to write an answer: the judging prompt ends in
  ``The better response is Response`` and the next-token log-likelihoods of `` A`` and `` B``
  give P(A). An endpoint's free-text answer is parsed (:func:`parse_choice`). Each pair is
  judged in both orders and the two verdicts averaged, which cancels the labeler's position
  bias. As in the paper, by default one principle is drawn per pair (``principles="sample"``);
  ``"all"`` judges every principle. The result is ``PreferencePair`` records with ``rater_id``
  ``constitution:NAME`` and per-principle labels, written as TRL JSON lines by
  :func:`write_judgments` for the platform store to import as one more rater.

Example::

    constitution = load_constitution("helpful-harmless")
    labeler = make_labeler("default")            # or make_labeler(endpoint=URL, model="gpt-4o")
    judged = judge_pairs(labeler, constitution, read_preferences("pairs.jsonl"))
    write_judgments(judged, "ai-feedback.jsonl")
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from rlhfkit.data.records import Example, Message, PreferencePair
from rlhfkit.errors import InputError

CONSTITUTIONS_DIR = Path(__file__).resolve().parents[3] / "configs" / "constitutions"
"""Where the built-in constitutions live (``configs/constitutions/NAME.md``)."""

MAX_BYTES = 100_000
MAX_PRINCIPLES = 50
MAX_CONTEXT_CHARS = 1000
"""Judging prompts keep the end of the conversation (what the replies answer)."""
MAX_RESPONSE_CHARS = 800
JUDGE_PREFILL = "The better response is Response"
OPTIONS = (" A", " B")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass
class Principle:
    name: str
    """Short name from the ``## name`` heading (labels are keyed by it)."""
    text: str
    """The question the labeler answers, in plain words."""
    line: int
    """Line of the heading in the file (for messages)."""


@dataclass
class Constitution:
    name: str
    """File stem (``helpful-harmless``); the rater id is ``constitution:NAME``."""
    title: str
    principles: list[Principle]
    source: str

    @property
    def rater_id(self) -> str:
        return f"constitution:{self.name}"


def builtin_constitutions() -> list[str]:
    """Names of the constitutions in ``configs/constitutions``."""
    return sorted(p.stem for p in CONSTITUTIONS_DIR.glob("*.md"))


def load_constitution(name_or_path: str | Path) -> Constitution:
    """A constitution from a markdown file, or a built-in one by name.

    Example::

        >>> [p.name for p in load_constitution("helpful-harmless").principles][:2]
        ['helpful', 'harmless']
    """
    path = Path(name_or_path)
    if path.suffix != ".md" and not path.exists():
        builtin = CONSTITUTIONS_DIR / f"{name_or_path}.md"
        if not builtin.is_file():
            raise InputError(
                f"{name_or_path}: no such constitution file or built-in constitution; built-in:"
                f" {', '.join(builtin_constitutions())}"
            )
        path = builtin
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such constitution file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a markdown constitution") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"{path}: {len(data)} bytes; a constitution is at most {MAX_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; expected a markdown constitution") from None
    return parse_constitution(text, name=path.stem, source=str(path))


def parse_constitution(
    text: str, name: str = "constitution", source: str = "<text>"
) -> Constitution:
    """Parse markdown: ``# Title``, prose, then ``## principle-name`` sections of text."""
    if "\x00" in text:
        raise InputError(f"{source}: contains NUL bytes; expected markdown text")
    title = None
    principles: list[Principle] = []
    current: tuple[str, int, list[str]] | None = None

    def close() -> None:
        if current is None:
            return
        pname, line, body = current
        words = " ".join(" ".join(body).split())
        if not words:
            raise InputError(
                f"{source}:{line}: principle {pname!r} has no text; expected the question the"
                " labeler answers under its heading"
            )
        principles.append(Principle(pname, words, line))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("## "):
            close()
            pname = line[3:].strip().lower()
            if not _NAME.match(pname):
                raise InputError(
                    f"{source}:{number}: principle name {line[3:].strip()!r}: expected lower-case"
                    " letters, digits, '-' or '_' (it becomes a label key)"
                )
            if any(p.name == pname for p in principles):
                raise InputError(f"{source}:{number}: principle {pname!r} appears twice")
            current = (pname, number, [])
        elif line.startswith("# ") and title is None and current is None:
            title = line[2:].strip()
        elif line.startswith("#") and not line.startswith("##"):
            raise InputError(
                f"{source}:{number}: unexpected heading {line[:40]!r}; expected one '# Title'"
                " first and '## name' for each principle"
            )
        elif current is not None:
            current[2].append(line)
    close()
    if title is None:
        raise InputError(f"{source}:1: no '# Title' line; expected a markdown constitution")
    if not principles:
        raise InputError(
            f"{source}: no principles; expected '## name' sections, each followed by its text"
        )
    if len(principles) > MAX_PRINCIPLES:
        raise InputError(f"{source}: {len(principles)} principles; at most {MAX_PRINCIPLES}")
    return Constitution(name=name, title=title, principles=principles, source=source)


# --- labelers -----------------------------------------------------------------------------------


class Labeler(Protocol):
    """A model that writes (critiques, revisions) and judges (P(response A is better))."""

    name: str
    method: str
    """How judgments are read: "loglik" (next-token likelihood) or "parse" (free text)."""

    def complete(self, conversations: list[list[Message]], max_tokens: int) -> list[str]:
        """The assistant's reply to each conversation."""
        ...

    def prefer_a(self, questions: list[list[Message]]) -> list[float | None]:
        """P(A is the better response) for each judging conversation; None = no answer."""
        ...


class LocalLabeler:
    """A local causal LM: greedy replies for writing, next-token likelihoods for judging."""

    method = "loglik"

    def __init__(self, model: str = "default", *, batch_size: int = 4, max_tokens: int = 1024):
        from rlhfkit.models import load_policy

        self.policy = load_policy(model)
        self.name = f"local:{model}"
        self.batch_size = batch_size
        self.max_tokens = max_tokens

    def complete(self, conversations: list[list[Message]], max_tokens: int) -> list[str]:
        from rlhfkit.models import generate_replies

        return generate_replies(
            self.policy,
            conversations,
            max_new_tokens=max_tokens,
            temperature=0.0,
            max_prompt_tokens=self.max_tokens,
            batch_size=self.batch_size,
        )

    def prefer_a(self, questions: list[list[Message]]) -> list[float | None]:
        from rlhfkit.models.chat import prompt_text

        tok = self.policy.tokenizer
        prefixes = [prompt_text(tok, q) + JUDGE_PREFILL for q in questions]
        logps = self.option_logprobs(prefixes, list(OPTIONS))  # (n, 2)
        return torch.softmax(logps, dim=-1)[:, 0].tolist()

    @torch.no_grad()
    def option_logprobs(self, prefixes: list[str], options: list[str]) -> torch.Tensor:
        """Log-likelihood of each option continuing each prefix: ``(len(prefixes), len(options))``.

        When every option is one token (" A", " B" in most tokenizers) one forward pass per
        prefix gives them all; otherwise each prefix + option is scored as its own sequence.
        """
        tok = self.policy.tokenizer
        opt_ids = [tok(o, add_special_tokens=False)["input_ids"] for o in options]
        single = all(len(o) == 1 for o in opt_ids) and len({o[0] for o in opt_ids}) == len(options)
        out = torch.zeros(len(prefixes), len(options))
        for start in range(0, len(prefixes), self.batch_size):
            chunk = [
                tok(p, add_special_tokens=False)["input_ids"][-self.max_tokens :]
                for p in prefixes[start : start + self.batch_size]
            ]
            if single:
                last = self._last_logprobs(chunk)  # (b, vocab)
                out[start : start + len(chunk)] = last[:, [o[0] for o in opt_ids]]
            else:
                for j, option in enumerate(opt_ids):
                    out[start : start + len(chunk), j] = self._sequence_logprobs(chunk, option)
        return out

    def _forward(self, sequences: list[list[int]]):
        from rlhfkit.models.chat import right_pad

        model = self.policy.model
        ids, mask = right_pad(sequences, self.policy.tokenizer.pad_token_id)  # (b, seq)
        hidden = model.get_decoder()(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
        ).last_hidden_state  # (b, seq, hidden)
        return hidden, mask

    def _last_logprobs(self, sequences: list[list[int]]) -> torch.Tensor:
        hidden, mask = self._forward(sequences)
        last = mask.sum(-1) - 1  # (b,)
        picked = hidden[torch.arange(len(sequences)), last]  # (b, hidden)
        logits = self.policy.model.get_output_embeddings()(picked).float()  # (b, vocab)
        return torch.log_softmax(logits, dim=-1).cpu()

    def _sequence_logprobs(self, prefixes: list[list[int]], option: list[int]) -> torch.Tensor:
        seqs = [(p + option)[-self.max_tokens :] for p in prefixes]
        hidden, mask = self._forward(seqs)
        n = len(option)
        totals = torch.zeros(len(seqs))
        head = self.policy.model.get_output_embeddings()
        for row, seq in enumerate(seqs):
            end = len(seq)
            # positions end-n-1 .. end-2 predict the option's tokens
            logits = head(hidden[row, end - n - 1 : end - 1]).float()  # (n, vocab)
            logp = torch.log_softmax(logits, dim=-1)
            totals[row] = logp.gather(-1, torch.tensor(option).unsqueeze(-1)).sum().cpu()
        return totals


class EndpointLabeler:
    """Any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, OpenAI, ...)."""

    method = "parse"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 1,
    ):
        from openai import OpenAI

        if not base_url.startswith(("http://", "https://")):
            raise InputError(f"--endpoint {base_url!r}: expected an http(s) URL")
        if not model:
            raise InputError("--endpoint-model: the endpoint's model name is required")
        self.base_url = base_url
        self.model = model
        self.name = f"endpoint:{model}"
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # local servers ignore it
        self.client = OpenAI(
            base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries
        )

    def _chat(self, messages: list[Message], max_tokens: int) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens, temperature=0.0
            )
        except (openai.APIError, ValueError) as exc:  # ValueError: a body that is not JSON
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            raise InputError(
                f"endpoint {self.base_url}: the chat completion failed ({exc.__class__.__name__}:"
                f" {first}); expected an OpenAI-compatible /chat/completions"
            ) from None
        choices = getattr(response, "choices", None)
        content = None
        if isinstance(choices, list) and choices:
            message = getattr(choices[0], "message", None)
            content = getattr(message, "content", None)
        if not isinstance(content, str):
            raise InputError(
                f"endpoint {self.base_url}: the response has no choices[0].message.content;"
                " expected an OpenAI-compatible chat completion"
            )
        return content

    def complete(self, conversations: list[list[Message]], max_tokens: int) -> list[str]:
        return [self._chat(c, max_tokens) for c in conversations]

    def prefer_a(self, questions: list[list[Message]]) -> list[float | None]:
        out: list[float | None] = []
        for q in questions:
            answer = parse_choice(self._chat(q, 32))
            out.append(None if answer is None else float(answer == "A"))
        return out


def make_labeler(
    model: str | None = "default",
    *,
    endpoint: str | None = None,
    endpoint_model: str | None = None,
    api_key: str | None = None,
) -> Labeler:
    """A local labeler (``model``) or, when ``endpoint`` is given, an endpoint labeler."""
    if endpoint:
        return EndpointLabeler(endpoint, endpoint_model or "", api_key=api_key)
    return LocalLabeler(model or "default")


_CHOICE_PATTERNS = [
    re.compile(r"^\W*\(?([AB])\)?\W*$"),  # just the letter
    re.compile(
        r"(?:answer|verdict|choice|final|better (?:response|reply|one)(?: is)?)\W{0,3}"
        r"(?:is\W*)?(?:response|option|reply)?\W{0,3}\(?([AB])\)?(?![A-Za-z])",
        re.IGNORECASE,
    ),
    re.compile(
        r"(?:response|option|reply)\s*\(?([AB])\)?\s*(?:is|was|would be)\s*(?:the\s*)?"
        r"(?:better|preferable|preferred|more|less harmful|superior)",
        re.IGNORECASE,
    ),
    re.compile(r"^\W*\(?([AB])\)?(?:[.:,)\n]|\s+(?:is|was)\b)"),  # "B. Because ..." / "B is"
]


def parse_choice(text: str) -> Literal["A", "B"] | None:
    """The labeler's choice in free text: "A", "B", or None when it cannot be told.

    Reasoning in ``<think>`` blocks is ignored; an explicit verdict ("Answer: B", "Response A is
    better") wins over mere mentions; a text that names both responses without a verdict is
    None rather than a guess.

    Example::

        >>> parse_choice("After weighing both, the better response is (B).")
        'B'
    """
    if not isinstance(text, str):
        return None
    text = re.sub(r"<think>.*?</think>", " ", text, flags=re.DOTALL).strip()[:4000]
    for pattern in _CHOICE_PATTERNS:
        found = {m.upper() for m in pattern.findall(text)}
        if len(found) == 1:
            return found.pop()  # type: ignore[return-value]
        if len(found) > 1:
            return None
    mentioned = set(re.findall(r"(?:response|option|reply)\s*\(?([AB])\b", text, re.IGNORECASE))
    return mentioned.pop().upper() if len(mentioned) == 1 else None  # type: ignore[return-value]


# --- prompts ------------------------------------------------------------------------------------


def _render(conversation: list[Message]) -> str:
    text = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in conversation)
    return text if len(text) <= MAX_CONTEXT_CHARS else "..." + text[-MAX_CONTEXT_CHARS:]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RESPONSE_CHARS else text[:MAX_RESPONSE_CHARS] + "..."


def judging_question(principle: Principle, prompt: list[Message], a: str, b: str) -> list[Message]:
    """The conversation that asks the labeler which of ``a`` and ``b`` better meets the
    principle."""
    return [
        {
            "role": "user",
            "content": (
                "Here is a conversation between a user and an AI assistant, and two possible"
                " next replies of the assistant.\n\n"
                f"Conversation:\n{_render(prompt)}\n\n"
                f"Response A:\n{_clip(a)}\n\n"
                f"Response B:\n{_clip(b)}\n\n"
                f"{principle.text}\n"
                "Answer with the letter of the better response: A or B."
            ),
        }
    ]


def critique_request(principle: Principle) -> str:
    return (
        "Identify specific ways in which the assistant's last response falls short of this"
        f" principle: {principle.text}"
    )


def revision_request(principle: Principle) -> str:
    return (
        "Rewrite the assistant's last response so that it meets the principle better:"
        f" {principle.text} Reply with the rewritten response only."
    )


# --- the two phases -----------------------------------------------------------------------------


def _pick_principles(
    constitution: Constitution, index: int, mode: str, seed: int
) -> list[Principle]:
    if mode == "all":
        return list(constitution.principles)
    if mode == "sample":
        # one principle per item, as in the paper; seeded by the item's position
        return [random.Random(seed * 1_000_003 + index).choice(constitution.principles)]
    names = {p.name: p for p in constitution.principles}
    if mode not in names:
        raise InputError(f"principles {mode!r}: expected all, sample or one of {', '.join(names)}")
    return [names[mode]]


def critique_and_revise(
    labeler: Labeler,
    constitution: Constitution,
    examples: list[Example],
    *,
    principles: str = "sample",
    max_tokens: int = 128,
    seed: int = 0,
) -> list[Example]:
    """Critique each example's reply against a principle and revise it; the revised replies
    are demonstrations (``rater_id = constitution:NAME``; ``meta`` keeps the original reply,
    the critique and the principle). An example with an empty reply gets one written first;
    one that ends with neither a reply nor a revision is left out.

    Example::

        demos = critique_and_revise(make_labeler("default"), load_constitution("helpful-harmless"),
                                    read_examples("prompts.jsonl"))
    """
    out = []
    for i, example in enumerate(examples):
        reply = example.completion
        if not reply.strip():
            reply = labeler.complete([example.prompt], max_tokens)[0]
        for principle in _pick_principles(constitution, i, principles, seed):
            convo = [*example.prompt, {"role": "assistant", "content": reply}]
            convo.append({"role": "user", "content": critique_request(principle)})
            critique = labeler.complete([convo], max_tokens)[0]
            convo += [
                {"role": "assistant", "content": critique},
                {"role": "user", "content": revision_request(principle)},
            ]
            revision = labeler.complete([convo], max_tokens)[0].strip()
            if not (revision or reply.strip()):
                continue  # nothing to learn from: no reply was written and none revised
            out.append(
                Example(
                    prompt=example.prompt,
                    completion=revision or reply,
                    rater_id=constitution.rater_id,
                    item_id=example.item_id or str(i),
                    source=example.source,
                    meta={
                        "principle": principle.name,
                        "original": reply,
                        "critique": critique,
                        "labeler": labeler.name,
                        "revised": bool(revision),
                    },
                )
            )
    return out


def judge_pairs(
    labeler: Labeler,
    constitution: Constitution,
    pairs: list[PreferencePair],
    *,
    principles: str = "sample",
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[PreferencePair]:
    """Judge each pair against the constitution: one output pair per input pair the labeler
    could judge, ``chosen`` = the reply it prefers (``tie`` when it is exactly undecided).

    Per principle, P(first reply better) is the mean of the verdicts in both orders; the
    overall verdict is the mean over the judged principles. ``labels`` holds the per-principle
    probabilities of each side (``{"chosen": {name: p}, "rejected": {name: 1 - p}}``, the
    per-response form the reward trainer's attribute heads read), ``margin`` = |2p - 1|, and
    ``meta["agrees_with_input"]`` says whether the labeler chose the input's ``chosen``.
    """
    jobs = []  # (pair index, principle, swapped)
    for i in range(len(pairs)):
        for principle in _pick_principles(constitution, i, principles, seed):
            jobs += [(i, principle, False), (i, principle, True)]
    answers: list[float | None] = []
    for start in range(0, len(jobs), batch_size):
        questions = []
        for i, principle, swapped in jobs[start : start + batch_size]:
            a, b = (
                (pairs[i].rejected, pairs[i].chosen)
                if swapped
                else (pairs[i].chosen, pairs[i].rejected)
            )
            questions.append(judging_question(principle, pairs[i].prompt, a, b))
        answers += labeler.prefer_a(questions)
        if progress is not None:
            progress(min(start + batch_size, len(jobs)), len(jobs))
    if jobs and all(a is None for a in answers):
        raise InputError(
            f"labeler {labeler.name}: none of its {len(answers)} answers named response A or B;"
            " expected a reply such as 'A' or 'Response B is better'"
        )
    per_pair: dict[int, dict[str, list[float]]] = {}
    for (i, principle, swapped), p_a in zip(jobs, answers, strict=True):
        if p_a is None:
            continue
        p_first = 1.0 - p_a if swapped else p_a  # P(the input's chosen is better)
        per_pair.setdefault(i, {}).setdefault(principle.name, []).append(p_first)
    out = []
    for i, verdicts in sorted(per_pair.items()):
        pair = pairs[i]
        probs = {name: sum(v) / len(v) for name, v in verdicts.items()}
        p = sum(probs.values()) / len(probs)
        keep = p >= 0.5
        chosen, rejected = (pair.chosen, pair.rejected) if keep else (pair.rejected, pair.chosen)
        side = {name: round(q if keep else 1.0 - q, 6) for name, q in probs.items()}
        out.append(
            PreferencePair(
                prompt=pair.prompt,
                chosen=chosen,
                rejected=rejected,
                rater_id=constitution.rater_id,
                labels={
                    "chosen": side,
                    "rejected": {k: round(1.0 - v, 6) for k, v in side.items()},
                },
                margin=round(abs(2 * p - 1), 6),
                tie=p == 0.5,
                item_id=pair.item_id or str(i),
                source=pair.source,
                meta={
                    "labeler": labeler.name,
                    "method": labeler.method,
                    "principles": sorted(probs),
                    "p_input_chosen": round(p, 6),
                    "p_input_chosen_by_principle": {k: round(q, 6) for k, q in probs.items()},
                    "agrees_with_input": p > 0.5,
                },
            )
        )
    return out


def write_judgments(pairs: list[PreferencePair], path: str | Path) -> int:
    """Write judged pairs as TRL JSON lines with ``rater_id`` (atomically); returns the count.

    Each line carries ``prompt``, ``chosen``, ``rejected``, ``rater_id``
    (``constitution:NAME``), ``labels`` (per principle), ``margin``, ``item_id``, ``meta``:
    what the platform store imports as one more rater's judgments.
    """
    from rlhfkit.data import write_preferences_jsonl

    return write_preferences_jsonl(pairs, path)


def write_demonstrations(examples: list[Example], path: str | Path) -> int:
    """Write revised replies as TRL prompt/completion JSON lines (for ``rlhfkit sft``)."""
    from rlhfkit.data import write_examples_jsonl

    return write_examples_jsonl(examples, path)


def summary(pairs: list[PreferencePair]) -> dict[str, Any]:
    """How often the labeler agreed with the input's chosen side, overall and per principle."""
    per: dict[str, list[bool]] = {}
    for pair in pairs:
        for name, p in pair.meta.get("p_input_chosen_by_principle", {}).items():
            if p != 0.5:
                per.setdefault(name, []).append(p > 0.5)
    decided = [p for p in pairs if not p.tie]
    return {
        "judged": len(pairs),
        "ties": len(pairs) - len(decided),
        "agreement": (
            sum(p.meta["agrees_with_input"] for p in decided) / len(decided) if decided else None
        ),
        "per_principle": {k: {"n": len(v), "agreement": sum(v) / len(v)} for k, v in per.items()},
    }


def judge_file(
    constitution: str,
    pairs: str,
    out: str,
    *,
    labeler: str = "default",
    endpoint: str | None = None,
    endpoint_model: str | None = None,
    principles: str = "sample",
    format: str | None = None,
) -> dict[str, Any]:
    """``rlhfkit personality judge``: judge a preference file, write the judgments; a summary.

    Example::

        judge_file("helpful-harmless", "pairs.jsonl", "ai-feedback.jsonl", labeler="default")
    """
    from rlhfkit.data import read_preferences

    parsed = load_constitution(constitution)  # bad files fail before any model loads
    records = read_preferences(pairs, format)
    model = make_labeler(labeler, endpoint=endpoint, endpoint_model=endpoint_model)
    judged = judge_pairs(model, parsed, records, principles=principles)
    write_judgments(judged, out)
    return {"out": str(out), "rater_id": parsed.rater_id, **summary(judged)}


def revise_file(
    constitution: str,
    replies: str,
    out: str,
    *,
    labeler: str = "default",
    endpoint: str | None = None,
    endpoint_model: str | None = None,
    principles: str = "sample",
    format: str | None = None,
) -> dict[str, Any]:
    """``rlhfkit personality revise``: critique and revise a file's replies; a summary.

    Example::

        revise_file("helpful-harmless", "replies.jsonl", "constitutional-sft.jsonl")
    """
    from rlhfkit.data import read_examples

    parsed = load_constitution(constitution)
    examples = read_examples(replies, format)
    model = make_labeler(labeler, endpoint=endpoint, endpoint_model=endpoint_model)
    demos = critique_and_revise(model, parsed, examples, principles=principles)
    n = write_demonstrations(demos, out)
    return {"out": str(out), "rater_id": parsed.rater_id, "examples": len(examples), "written": n}
