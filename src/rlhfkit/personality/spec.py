"""Personality specs: what an assistant is rewarded for, as weights over attributes.

A spec is a small YAML file::

    name: concise
    description: Short, direct answers without filler or hedging.
    weights:
      concision: 1.0        # a built-in attribute scorer (rlhfkit.personality.scorers)
      hedging: -0.5
      head:helpful: 1.0     # a head of the reward model being trained against, by label
      rm:runs/rm/model#1: 0.5   # head 1 of a reward model directory
    kl_budget: 6.0

The composite reward of a reply is ``sum(weight * (score - 0.5) / spread)`` over the weights.
Every score is in [0, 1]; subtracting 0.5 centres it, so that a reply sitting at the midpoint of
every attribute gets reward 0, the reward is symmetric in "more" and "less" of an attribute, and
a spec whose weights are all zero is neutral (reward 0 for every reply).

``spread`` makes the weights comparable across attributes (``units: sd``, the default): it is
the standard deviation of that attribute among the starting policy's own replies (fitted by the
trainer, :func:`term_spreads`; at least ``MIN_SPREAD``), so a weight is "per standard deviation
of what the model actually varies in". Without it (``units: score``, or before fitting) the
attribute whose scores happen to spread widest drowns the others: among the default model's
replies the hedging score spreads several times wider than the length score, so a concise spec
with ``concision: 1.0, hedging: -0.5`` rewarded mostly not hedging.

Example::

    >>> spec = load_spec("concise")
    >>> composite_reward(spec, ["Yes.", "Well, it might depend on many factors..."])
    [0.75..., 0.11...]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhfkit.errors import InputError
from rlhfkit.personality.scorers import ATTRIBUTES, RewardHeadScorer, score

SPECS_DIR = Path(__file__).resolve().parents[3] / "configs" / "personalities"
"""Where the built-in specs live (``configs/personalities/NAME.yaml`` in the project)."""

DEFAULT_SPEC = "helpful-harmless"
"""The spec used when none is named."""

MAX_ABS_WEIGHT = 100.0
"""Larger weights are almost surely a typo (and would swamp the KL penalty)."""

CENTRE = 0.5
"""Subtracted from every score before weighting (see the module docstring)."""

_HEAD_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_EXPONENT = re.compile(r"[-+]?\d+(?:\.\d*)?[eE][-+]?\d+")
_FIELDS = ("name", "description", "weights", "kl_budget")
_OPTIONAL = ("units",)
UNITS = ("sd", "score")
"""``sd``: weights per standard deviation of each attribute among the starting policy's replies;
``score``: per unit of the raw [0, 1] score."""
MIN_SPREAD = 0.1
"""Floor of a fitted spread: an attribute the starting policy never varies in (sarcasm, say)
would otherwise turn its first occurrence into an enormous reward. At 0.05 (the seventh
session's value) ``sarcasm: -0.5`` cost 10 per unit of score, so one reply the sarcasm scorer
flagged outweighed the politeness differences of a whole batch (docs/personality.md, "Third
run"); 0.1 is about the spread of the attributes the default model does vary in (politeness
0.075, formatting 0.26)."""


@dataclass
class PersonalitySpec:
    """What an assistant is rewarded for."""

    name: str
    """Short identifier (used in run names)."""
    description: str
    """What the personality is, in plain words, for the people who choose it."""
    weights: dict[str, float]
    """Weight per term: an attribute name, ``head:LABEL`` (a head of the reward model in use,
    by its label) or ``rm:PATH#INDEX`` (a head of a reward model directory). Positive rewards
    more of it, negative less."""
    kl_budget: float
    """Target KL divergence (nats per reply) from the starting policy that training may spend
    to reach the personality; trainers use it as the adaptive-KL target."""
    source: str | None = field(default=None, compare=False)
    """The file the spec was loaded from."""
    units: str = "sd"
    """``sd`` (default): each weight counts per standard deviation of its term among the starting
    policy's replies; ``score``: per unit of the raw [0, 1] score (see the module docstring)."""

    def heads(self) -> list[str]:
        """Labels of the ``head:LABEL`` terms (scores the caller must supply)."""
        return [key[len("head:") :] for key in self.weights if key.startswith("head:")]


def builtin_specs() -> list[str]:
    """Names of the specs in ``configs/personalities``."""
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def load_spec(name_or_path: str | Path = DEFAULT_SPEC) -> PersonalitySpec:
    """Load a spec from a YAML file, or a built-in one by name (``concise``).

    Errors name the file, the line and the field, and say what was expected.

    Example::

        >>> load_spec("warm-and-polite").weights["politeness"]
        1.0
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        builtin = SPECS_DIR / f"{name_or_path}.yaml"
        if not builtin.is_file():
            raise InputError(
                f"{name_or_path}: no such spec file or built-in spec; built-in specs are"
                f" {', '.join(builtin_specs())}"
            )
        path = builtin
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a YAML spec file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; expected a YAML spec file") from None
    return parse_spec(text, source=str(path))


def parse_spec(text: str, source: str = "<spec>") -> PersonalitySpec:
    """Build a spec from YAML text; ``source`` names it in error messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise InputError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise InputError(
            f"{source}: expected a mapping with fields {', '.join(_FIELDS)}, got"
            f" {type(data).__name__ if data is not None else 'an empty file'}"
        )
    lines = _key_lines(node)

    def where(key: str) -> str:
        line = lines.get(key)
        return f"{source}:{line}" if line else source

    for key in data:
        if key not in _FIELDS + _OPTIONAL:
            raise InputError(
                f"{where(str(key))}: unknown field {key!r}; expected"
                f" {', '.join(_FIELDS + _OPTIONAL)}"
            )
    for key in _FIELDS:
        if key not in data:
            raise InputError(f"{source}: missing field {key!r}")

    name, description = data["name"], data["description"]
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where('name')}: field 'name' must be a non-empty string")
    if not isinstance(description, str) or not description.strip():
        raise InputError(
            f"{where('description')}: field 'description' must be a non-empty string"
            " (what the personality is, in plain words)"
        )

    raw_weights = data["weights"]
    if not isinstance(raw_weights, dict) or not raw_weights:
        raise InputError(
            f"{where('weights')}: field 'weights' must be a non-empty mapping of attribute: number"
        )
    weight_lines = _key_lines(_value_node(node, "weights"))
    weights: dict[str, float] = {}
    for key, value in raw_weights.items():
        loc = f"{source}:{weight_lines[str(key)]}" if str(key) in weight_lines else where("weights")
        term = _check_term(key, loc)
        weights[term] = _check_weight(value, f"{loc}: field weights.{term}")

    kl_budget = data["kl_budget"]
    if (
        isinstance(kl_budget, bool)
        or not isinstance(kl_budget, (int, float))
        or not math.isfinite(kl_budget)
        or kl_budget <= 0
    ):
        raise InputError(
            f"{where('kl_budget')}: field 'kl_budget' must be a positive number (nats), got"
            f" {kl_budget!r}"
        )
    units = data.get("units", "sd")
    if units not in UNITS:
        raise InputError(f"{where('units')}: field 'units' must be sd or score, got {units!r}")
    return PersonalitySpec(
        name=name.strip(),
        description=" ".join(description.split()),
        weights=weights,
        kl_budget=float(kl_budget),
        source=source,
        units=units,
    )


def _check_term(key: Any, loc: str) -> str:
    if not isinstance(key, str):
        raise InputError(f"{loc}: weights key {key!r} must be a string")
    if key.startswith("head:"):
        if not _HEAD_NAME.match(key[5:]):
            raise InputError(f"{loc}: {key!r}: expected head:LABEL with a label like 'harmless'")
        return key
    if key.startswith("rm:"):
        body = key[3:]
        path, sep, index = body.rpartition("#")
        if not sep or not path or not index.isdigit():
            raise InputError(f"{loc}: {key!r}: expected rm:PATH#INDEX with an integer INDEX")
        return key
    if key not in ATTRIBUTES:
        raise InputError(
            f"{loc}: unknown attribute {key!r} in weights; expected one of"
            f" {', '.join(ATTRIBUTES)}, head:LABEL or rm:PATH#INDEX"
        )
    return key


def _check_weight(value: Any, where: str) -> float:
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        # PyYAML follows YAML 1.1, where 1e-3 (no dot) is a string: accept it as the number
        # the writer meant.
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: weight must be a number, got {value!r}")
    if not math.isfinite(value) or abs(value) > MAX_ABS_WEIGHT:
        raise InputError(
            f"{where}: weight must be finite and within ±{MAX_ABS_WEIGHT:g}, got {value!r}"
        )
    return float(value)


def _key_lines(node: Any) -> dict[str, int]:
    """1-based line of each key of a YAML mapping node (for error messages)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)
    }


def _value_node(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def composite_reward(
    spec: PersonalitySpec,
    texts: list[str],
    head_scores: dict[str, list[float]] | None = None,
    spreads: dict[str, float] | None = None,
) -> list[float]:
    """``sum(weight * (score - 0.5) / spread)`` over the spec's terms, one reward per text;
    ``spreads`` from :func:`term_spreads` (a term without one counts in raw score units).

    Attribute terms are scored here. ``head:LABEL`` terms take their scores from
    ``head_scores[LABEL]`` (or ``head_scores["head:LABEL"]``), which the caller computes with
    the reward model it trains against, already in [0, 1] (e.g. ``RewardHeadScorer``).
    ``rm:PATH#INDEX`` terms use ``head_scores`` when it has that key, else the model is loaded.

    Example::

        >>> spec = PersonalitySpec("p", "polite", {"politeness": 2.0, "head:helpful": 1.0}, 6.0)
        >>> composite_reward(spec, ["Thanks!"], head_scores={"helpful": [0.9]})
        [0.82...]
    """
    head_scores = head_scores or {}
    spreads = spreads or {}
    rewards = [0.0] * len(texts)
    for term, weight in spec.weights.items():
        if weight == 0.0:
            continue
        values = _term_scores(spec, term, texts, head_scores)
        unit = weight / spreads.get(term, 1.0)
        for i, value in enumerate(values):
            rewards[i] += unit * (value - CENTRE)
    return rewards


def term_spreads(
    spec: PersonalitySpec,
    texts: list[str],
    head_scores: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Per weighted term, the standard deviation of its scores over ``texts`` (the starting
    policy's replies), at least :data:`MIN_SPREAD`; ``{}`` for a spec in ``units: score``.

    Example::

        >>> spec = PersonalitySpec("p", "short", {"concision": 1.0}, 6.0)
        >>> term_spreads(spec, ["Yes.", "Yes, of course, happy to help with that."])
        {'concision': 0.1...}
    """
    if spec.units == "score" or len(texts) < 2:
        return {}  # (one reply has no spread: raw units)
    head_scores = head_scores or {}
    spreads = {}
    for term, weight in spec.weights.items():
        if weight == 0.0:
            continue
        values = _term_scores(spec, term, texts, head_scores)
        mean = sum(values) / len(values) if values else 0.0
        var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
        spreads[term] = max(MIN_SPREAD, math.sqrt(var))
    return spreads


def _term_scores(
    spec: PersonalitySpec, term: str, texts: list[str], head_scores: dict[str, list[float]]
) -> list[float]:
    if term.startswith("head:"):
        label = term[len("head:") :]
        values = head_scores.get(label, head_scores.get(term))
        if values is None:
            raise InputError(
                f"spec {spec.name!r} weighs {term!r}: pass its scores as head_scores[{label!r}]"
                f" (got scores for {', '.join(head_scores) or 'no heads'})"
            )
    elif term.startswith("rm:"):
        values = head_scores.get(term)
        if values is None:
            values = RewardHeadScorer.from_reference(term)(texts)
    else:
        values = score(term, texts)
    if len(values) != len(texts):
        raise InputError(
            f"spec {spec.name!r}: {len(values)} scores for {term!r}, expected one per text"
            f" ({len(texts)})"
        )
    for value in values:
        if not (0.0 <= value <= 1.0):
            raise InputError(f"spec {spec.name!r}: score {value!r} for {term!r} is outside [0, 1]")
    return list(values)
