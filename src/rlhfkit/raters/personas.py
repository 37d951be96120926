"""Simulated rater personas and pools: who the simulated raters are and how they choose.

A **persona** is a utility over attribute scores of a response plus the habits of a person at a
comparison page:

- ``weights``: utility ``U(response) = sum(weight[a] * attribute_a(response))``. ``length`` is
  ``log(1 + words)``, the unit of the bias profile (:mod:`rlhfkit.raters.bias`), so a length
  weight ``w`` at temperature 1 means "doubling a reply multiplies the odds of choosing it by
  ``2**w``". Every other name is a scorer of :mod:`rlhfkit.personality.scorers` (0..1).
- ``temperature``: Bradley-Terry choice noise, ``P(first) = sigmoid(position_bias + (U_first -
  U_second) / temperature)``. The bias profile of this persona's judgments therefore estimates
  ``weight / temperature`` for each attribute and ``position_bias`` for position
  (:meth:`Persona.planted_coefficients`).
- ``lapse_rate``: share of tasks answered by a random click (first, second or tie, equally
  likely, any strength, no labels), which is what a careless rater looks like to the
  agreement statistics.
- ``tie_band``: a utility difference smaller than this is answered "tie".
- label habits: ``label_rate`` (share of tasks where labels are ticked at all), ``labels``
  (label -> rule on an attribute, e.g. ``verbose: {attribute: length, above: 4.5}``) and
  ``strength`` (``calibrated``: 3/2/1 by how sure the rater is; ``extreme``: always 3;
  ``mild``: always 1).
- ``seconds_per_task`` (median) and ``seconds_spread`` (log-normal sigma): simulated speed.
- ``tags``: self-described demographic fields sent to the platform's profile (a list value
  means one option is drawn per rater).

A **pool** (YAML) mixes personas in proportions (``share``) over a number of ``raters``. Its
true utility, the share-weighted mean of its personas' utilities, is the gold reward of
experiments (:func:`gold_reward`).

Example::

    >>> pool = load_pool("configs/pools/balanced.yaml")  # doctest: +SKIP
    >>> gold_reward(pool, [[]], ["Thank you! Paris is the capital of France."])  # doctest: +SKIP
    [1.93...]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rlhfkit.errors import InputError
from rlhfkit.raters.bias import log_words

STRENGTH_HABITS = ("calibrated", "extreme", "mild")

DEFAULT_LABEL_RULES: dict[str, dict[str, Any]] = {
    "verbose": {"attribute": "length", "above": math.log1p(150)},
    "polite": {"attribute": "politeness", "above": 0.6},
    "evasive": {"attribute": "refusal", "above": 0.5},
}
"""What a persona ticks when its pool file names no label rules: the platform's default labels
that a text scorer can judge (helpful, harmful and honest need knowledge the scorers lack)."""


def attribute_names() -> tuple[str, ...]:
    """Attributes a persona may weigh: ``length`` (log words) and the personality scorers."""
    from rlhfkit.personality.scorers import ATTRIBUTES

    return ("length", *(a for a in ATTRIBUTES if a != "length"))


def attribute_values(names: Sequence[str], texts: Sequence[str]) -> dict[str, np.ndarray]:
    """``{attribute: (len(texts),) array}`` for each name, scoring each distinct text once."""
    from rlhfkit.personality.scorers import score

    index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    distinct = list(index)
    where = np.array([index[t] for t in texts], dtype=int)
    out = {}
    for name in dict.fromkeys(names):
        if name == "length":
            values = np.array([log_words(t) for t in distinct], dtype=float)
        else:
            values = np.asarray(score(name, distinct), dtype=float)
        out[name] = values[where] if len(distinct) else np.zeros(0)
    return out


@dataclass
class LabelRule:
    """Tick a label when the response's attribute lies above and/or below a threshold."""

    attribute: str
    above: float | None = None
    below: float | None = None

    def ticks(self, value: float) -> bool:
        return (self.above is None or value > self.above) and (
            self.below is None or value < self.below
        )


@dataclass
class Persona:
    """One kind of rater (see the module docstring for each field's meaning)."""

    name: str
    weights: dict[str, float]
    temperature: float = 1.0
    position_bias: float = 0.0
    lapse_rate: float = 0.0
    tie_band: float = 0.0
    strength: str = "calibrated"
    label_rate: float = 1.0
    labels: dict[str, LabelRule] = field(default_factory=dict)
    seconds_per_task: float = 30.0
    seconds_spread: float = 0.5
    tags: dict[str, str | list[str]] = field(default_factory=dict)

    @property
    def attributes(self) -> list[str]:
        """Every attribute this persona needs scored (weights and label rules)."""
        return list(dict.fromkeys([*self.weights, *(r.attribute for r in self.labels.values())]))

    def utility(self, values: Mapping[str, Any]) -> np.ndarray:
        """``sum(weight * attribute)`` for arrays (or floats) of attribute values."""
        total = 0.0
        for name, weight in self.weights.items():
            total = total + weight * np.asarray(values[name], dtype=float)
        return np.asarray(total, dtype=float)

    def planted_coefficients(self) -> dict[str, float]:
        """What a bias profile of this persona's choices should recover (lapses aside): the
        position effect and ``weight / temperature`` per attribute, in log-odds."""
        out = {"position": self.position_bias}
        out.update({a: w / self.temperature for a, w in self.weights.items()})
        return out


@dataclass
class Decision:
    """One simulated judgment of a pair shown as (first, second)."""

    choice: str
    """``first``, ``second`` or ``tie``."""
    strength: int | None
    """1..3 for a choice, None for a tie."""
    lapsed: bool
    """A random click, not a judgment."""
    seconds: float
    """Simulated time on task."""
    labels: tuple[dict[str, bool], dict[str, bool]]
    """Ticked labels of the first and of the second response."""


def decide(
    persona: Persona,
    first: Mapping[str, float],
    second: Mapping[str, float],
    rng: np.random.Generator,
    label_set: Sequence[str] | None = None,
) -> Decision:
    """The persona's judgment of two responses given their attribute values.

    The one choice function behind both the offline simulation and the raters that work
    through the platform's API. ``label_set`` limits the labels to those the task offers.

    Example::

        >>> p = Persona("terse", {"length": -1.0})
        >>> decide(p, {"length": 1.0}, {"length": 4.0}, np.random.default_rng(0)).choice
        'first'
    """
    # Draw every random number in a fixed order, so a seed fixes the whole run.
    seconds = persona.seconds_per_task * math.exp(persona.seconds_spread * rng.standard_normal())
    lapse, u, pick_strength, tick = rng.random(), rng.random(), rng.integers(1, 4), rng.random()
    labels = _labels(persona, first, second, label_set) if tick < persona.label_rate else ({}, {})
    if lapse < persona.lapse_rate:
        # A random click on one of the page's three answers, any strength, no labels.
        choice = ("first", "second", "tie")[min(int(u * 3), 2)]
        strength = None if choice == "tie" else int(pick_strength)
        return Decision(choice, strength, True, seconds, ({}, {}))
    diff = float(persona.utility(first) - persona.utility(second))
    if abs(diff) < persona.tie_band:
        return Decision("tie", None, False, seconds, labels)
    z = persona.position_bias + diff / persona.temperature
    p_first = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
    choice = "first" if u < p_first else "second"
    sure = p_first if choice == "first" else 1.0 - p_first
    return Decision(choice, _strength(persona.strength, sure), False, seconds, labels)


def _strength(habit: str, sure: float) -> int:
    if habit == "extreme":
        return 3
    if habit == "mild":
        return 1
    return 3 if sure >= 0.9 else 2 if sure >= 0.7 else 1


def _labels(
    persona: Persona,
    first: Mapping[str, float],
    second: Mapping[str, float],
    label_set: Sequence[str] | None,
) -> tuple[dict[str, bool], dict[str, bool]]:
    offered = (
        persona.labels
        if label_set is None
        else {k: v for k, v in persona.labels.items() if k in label_set}
    )
    return (
        {k: rule.ticks(float(first[rule.attribute])) for k, rule in offered.items()},
        {k: rule.ticks(float(second[rule.attribute])) for k, rule in offered.items()},
    )


@dataclass
class Pool:
    """Personas mixed in proportions over ``raters`` simulated raters."""

    name: str
    raters: int
    personas: list[Persona]
    shares: list[float]
    """Normalised to sum to 1, parallel to ``personas``."""
    source: str = ""

    @property
    def attributes(self) -> list[str]:
        return list(dict.fromkeys(a for p in self.personas for a in p.attributes))

    def assign(self, n: int | None = None) -> list[Persona]:
        """Persona of each of ``n`` raters (default: the pool's ``raters``), by largest
        remainder so the counts match the shares as closely as whole raters can."""
        n = self.raters if n is None else n
        exact = [s * n for s in self.shares]
        counts = [math.floor(x) for x in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
        for i in by_remainder[: n - sum(counts)]:
            counts[i] += 1
        return [p for p, c in zip(self.personas, counts, strict=True) for _ in range(c)]

    def utility(self, values: Mapping[str, Any]) -> np.ndarray:
        """The pool's true utility: the share-weighted mean of its personas' utilities."""
        return sum(s * p.utility(values) for p, s in zip(self.personas, self.shares, strict=True))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "raters": self.raters,
            "source": self.source,
            "personas": {
                p.name: round(s, 6) for p, s in zip(self.personas, self.shares, strict=True)
            },
        }


def gold_reward(pool: Pool, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
    """The pool's true (mixture expected) utility of each response: the gold reward.

    ``prompts`` are parallel to ``responses``; today's attributes are functions of the reply
    alone, so prompts are only checked for length (a prompt-aware attribute would use them).

    Example::

        >>> pool = Pool("p", 2, [Persona("long", {"length": 1.0})], [1.0])
        >>> [round(x, 3) for x in gold_reward(pool, [[], []], ["one", "one two three"])]
        [0.693, 1.386]
    """
    if len(prompts) != len(responses):
        raise InputError(
            f"gold_reward: {len(prompts)} prompts but {len(responses)} responses; expected one"
            " prompt per response"
        )
    values = attribute_values(pool.attributes, list(responses))
    return [float(x) for x in np.broadcast_to(pool.utility(values), (len(responses),))]


# --- pool files ---------------------------------------------------------------------------------

_PERSONA_KEYS = {
    "name", "share", "weights", "temperature", "position_bias", "lapse_rate", "tie_band",
    "strength", "label_rate", "labels", "seconds_per_task", "seconds_spread", "tags",
}  # fmt: skip
_POOL_KEYS = {"name", "raters", "personas"}


class _Where:
    """Line numbers of every node of a YAML document, to name PATH:LINE in errors."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines: dict[tuple, int] = {}
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            root = None
        if root is not None:
            self._walk(root, ())

    def _walk(self, node, key: tuple) -> None:
        self.lines[key] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                self._walk(v, (*key, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, (*key, i))

    def error(self, key: tuple, message: str) -> InputError:
        line = next(
            (self.lines[key[:n]] for n in range(len(key), -1, -1) if key[:n] in self.lines), 1
        )
        dotted = ".".join(f"[{k}]" if isinstance(k, int) else str(k) for k in key).replace(
            ".[", "["
        )
        return InputError(f"{self.path}:{line}: {dotted + ': ' if dotted else ''}{message}")


def load_pool(path: str | Path) -> Pool:
    """Read a pool YAML file (see ``configs/pools/``); errors name ``PATH:LINE`` and the field.

    Example::

        >>> load_pool("configs/pools/careless-mix.yaml").assign()[:2]  # doctest: +SKIP
        [Persona(name='careful', ...), Persona(name='careful', ...)]
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such pool file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read a pool file ({exc.__class__.__name__})") from None
    where = _Where(path, text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}{line}: not valid YAML; expected a pool mapping") from None
    return parse_pool(data, where)


def parse_pool(data: Any, where: _Where | str = "pool") -> Pool:
    """A :class:`Pool` from a parsed mapping (``where`` names the source in errors)."""
    if isinstance(where, str):
        where = _Where(Path(where), "")
    if not isinstance(data, dict):
        raise where.error((), "expected a mapping with name, raters and personas")
    _unknown(data, _POOL_KEYS, (), where)
    name = _text(data.get("name", where.path.stem), ("name",), where)
    raters = data.get("raters")
    if isinstance(raters, bool) or not isinstance(raters, int) or not 1 <= raters <= 10_000:
        raise where.error(
            ("raters",), f"expected a whole number of raters 1..10000, got {raters!r}"
        )
    items = data.get("personas")
    if not isinstance(items, list) or not items:
        raise where.error(("personas",), "expected a non-empty list of personas")
    personas, shares = [], []
    for i, item in enumerate(items):
        persona, share = _persona(item, ("personas", i), where)
        if any(p.name == persona.name for p in personas):
            raise where.error(("personas", i, "name"), f"persona {persona.name!r} appears twice")
        personas.append(persona)
        shares.append(share)
    total = sum(shares)
    return Pool(name, raters, personas, [s / total for s in shares], source=str(where.path))


def _persona(item: Any, key: tuple, where: _Where) -> tuple[Persona, float]:
    if not isinstance(item, dict):
        raise where.error(key, "expected a persona mapping (name, share, weights, ...)")
    _unknown(item, _PERSONA_KEYS, key, where)
    name = _text(item.get("name"), (*key, "name"), where)
    share = _number(item.get("share", 1.0), (*key, "share"), where, low=0.0, strict_low=True)
    known = attribute_names()
    weights_raw = item.get("weights")
    if not isinstance(weights_raw, dict) or not weights_raw:
        raise where.error((*key, "weights"), "expected a mapping of attribute: weight")
    weights = {}
    for attr, w in weights_raw.items():
        if attr not in known:
            raise where.error(
                (*key, "weights", attr), f"unknown attribute; expected one of {', '.join(known)}"
            )
        weights[attr] = _number(w, (*key, "weights", attr), where)
    strength = item.get("strength", "calibrated")
    if strength not in STRENGTH_HABITS:
        raise where.error(
            (*key, "strength"), f"expected one of {', '.join(STRENGTH_HABITS)}, got {strength!r}"
        )
    num = lambda field, default, **kw: _number(  # noqa: E731
        item.get(field, default), (*key, field), where, **kw
    )
    persona = Persona(
        name=name,
        weights=weights,
        temperature=num("temperature", 1.0, low=0.0, strict_low=True),
        position_bias=num("position_bias", 0.0),
        lapse_rate=num("lapse_rate", 0.0, low=0.0, high=1.0),
        tie_band=num("tie_band", 0.0, low=0.0),
        strength=strength,
        label_rate=num("label_rate", 1.0, low=0.0, high=1.0),
        labels=_label_rules(item.get("labels", DEFAULT_LABEL_RULES), (*key, "labels"), where),
        seconds_per_task=num("seconds_per_task", 30.0, low=0.0, strict_low=True),
        seconds_spread=num("seconds_spread", 0.5, low=0.0, high=5.0),
        tags=_tags(item.get("tags", {}), (*key, "tags"), where),
    )
    return persona, share


def _label_rules(raw: Any, key: tuple, where: _Where) -> dict[str, LabelRule]:
    if not isinstance(raw, dict):
        raise where.error(key, "expected a mapping of label: {attribute, above and/or below}")
    known = attribute_names()
    rules = {}
    for label, rule in raw.items():
        k = (*key, label)
        if not isinstance(rule, dict) or rule.get("attribute") not in known:
            raise where.error(k, f"expected {{attribute: one of {', '.join(known)}, above: x}}")
        _unknown(rule, {"attribute", "above", "below"}, k, where)
        above, below = rule.get("above"), rule.get("below")
        if above is None and below is None:
            raise where.error(k, "expected a threshold: above and/or below")
        rules[str(label)] = LabelRule(
            rule["attribute"],
            None if above is None else _number(above, (*k, "above"), where),
            None if below is None else _number(below, (*k, "below"), where),
        )
    return rules


def _tags(raw: Any, key: tuple, where: _Where) -> dict[str, str | list[str]]:
    from rlhfkit.store.schema import PROFILE_FIELDS

    if not isinstance(raw, dict):
        raise where.error(
            key, f"expected a mapping of profile fields ({', '.join(PROFILE_FIELDS)})"
        )
    out: dict[str, str | list[str]] = {}
    for name, value in raw.items():
        if name not in PROFILE_FIELDS:
            raise where.error(
                (*key, name), f"unknown profile field; expected one of {', '.join(PROFILE_FIELDS)}"
            )
        options = value if isinstance(value, list) else [value]
        if not options or not all(isinstance(v, (str, int)) and str(v) for v in options):
            raise where.error((*key, name), "expected a text value or a list of them")
        out[name] = [str(v) for v in options] if isinstance(value, list) else str(value)
    return out


def _unknown(mapping: dict, allowed: set[str], key: tuple, where: _Where) -> None:
    for k in mapping:
        if k not in allowed:
            raise where.error(
                (*key, k), f"unknown field; expected one of {', '.join(sorted(allowed))}"
            )


def _text(value: Any, key: tuple, where: _Where) -> str:
    if not isinstance(value, (str, int)) or not str(value).strip():
        raise where.error(key, f"expected a non-empty name, got {value!r}")
    return str(value)


def _number(
    value: Any,
    key: tuple,
    where: _Where,
    low: float | None = None,
    high: float | None = None,
    strict_low: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise where.error(key, f"expected a number, got {value!r}")
    if low is not None and (value < low or (strict_low and value == low)):
        raise where.error(
            key, f"expected a number {'>' if strict_low else '>='} {low}, got {value}"
        )
    if high is not None and value > high:
        raise where.error(key, f"expected a number <= {high}, got {value}")
    return float(value)
