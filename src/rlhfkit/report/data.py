"""The report as plain data: sections of facts, tables, plots and sample replies.

Every number is a :class:`Fact` that carries its ``source``: ``PATH#KEY`` for a value read from a
run file (``runs/ppo/eval.json#after.reward``, ``runs/ppo/metrics.jsonl#objective/kl``) or
``store:TABLE`` for one computed from the platform's store. ``to_dict`` is what
``rlhfkit report --json`` prints and ``from_dict`` reads it back, so the HTML can be rendered from
either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_TEXT = 1000
"""Longest prompt, reply or comment kept from a run or the store (characters)."""
MAX_NAME = 100
"""Longest name (rater, file, spec) kept."""
MAX_ROWS = 200
"""Most rows kept in one table; the rest are counted in the table's note."""


def clip(text: Any, limit: int = MAX_TEXT) -> str:
    """``text`` as a string of at most ``limit`` characters (an ellipsis marks a cut)."""
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(value: Any) -> Any:
    """A JSON-safe scalar: NaN and infinities become None, long strings are clipped."""
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalars
        return plain(value.item())
    return clip(value, MAX_NAME * 2)


@dataclass
class Fact:
    """One number (or short value) and where it came from."""

    label: str
    value: Any
    source: str
    """``PATH#KEY`` (a run file and the key in it) or ``store:TABLE``."""
    unit: str = ""
    """How to show it: "" (as is), "%" (a share in [0, 1]), "cents", "cents/h", "s"."""

    def __post_init__(self) -> None:
        self.value = plain(self.value)


@dataclass
class Table:
    """Rows of cells; a cell is a plain value (its source is the table's) or a :class:`Fact`."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    source: str
    note: str = ""

    def __post_init__(self) -> None:
        if len(self.rows) > MAX_ROWS:
            self.note = (self.note + " " if self.note else "") + (
                f"{len(self.rows) - MAX_ROWS} more rows not shown."
            )
            self.rows = self.rows[:MAX_ROWS]
        self.rows = [[c if isinstance(c, Fact) else plain(c) for c in row] for row in self.rows]


@dataclass
class Series:
    label: str
    x: list[float]
    y: list[float | None]
    source: str

    def __post_init__(self) -> None:
        # NaN is not JSON; a missing point is None (a gap in the line)
        self.x = [plain(v) for v in self.x]
        self.y = [plain(v) for v in self.y]


@dataclass
class Plot:
    """A line plot (``kind="line"``: series over steps) or coefficients with 95 % intervals
    (``kind="interval"``: one series whose x are estimates; ``low``/``high`` the bounds)."""

    title: str
    x_label: str
    y_label: str
    series: list[Series]
    kind: str = "line"
    categories: list[str] = field(default_factory=list)
    low: list[float | None] = field(default_factory=list)
    high: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.low = [plain(v) for v in self.low]
        self.high = [plain(v) for v in self.high]


@dataclass
class Sample:
    """A held-out prompt with the policy's reply before and after training."""

    prompt: str
    before: str | None
    after: str | None
    source: str

    def __post_init__(self) -> None:
        self.prompt = clip(self.prompt)
        self.before = None if self.before is None else clip(self.before)
        self.after = None if self.after is None else clip(self.after)


@dataclass
class Section:
    """One question the report answers; ``notes`` say what was not recorded and why."""

    key: str
    title: str
    facts: list[Fact] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.facts or self.tables or self.plots or self.samples)


@dataclass
class ReportData:
    """Everything the report shows: the runs it read, the store it asked, and the sections."""

    title: str
    runs: list[str]
    """The run directories read (the ones named, then their parents)."""
    store: str | None
    """The store's URL with any password hidden; None when no store was read."""
    sections: list[Section]

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportData:
        def fact_or_value(cell):
            return Fact(**cell) if isinstance(cell, dict) else cell

        sections = []
        for s in data["sections"]:
            sections.append(
                Section(
                    key=s["key"],
                    title=s["title"],
                    facts=[Fact(**f) for f in s["facts"]],
                    tables=[
                        Table(**{**t, "rows": [[fact_or_value(c) for c in r] for r in t["rows"]]})
                        for t in s["tables"]
                    ],
                    plots=[
                        Plot(**{**p, "series": [Series(**x) for x in p["series"]]})
                        for p in s["plots"]
                    ],
                    samples=[Sample(**x) for x in s["samples"]],
                    notes=list(s["notes"]),
                )
            )
        return cls(
            title=data["title"], runs=list(data["runs"]), store=data["store"], sections=sections
        )


def flatten(obj: Any, prefix: str = "", limit: int = 80) -> list[tuple[str, Any]]:
    """``(dotted.key, scalar)`` pairs of a nested JSON value, for result files whose layout the
    report does not know (trade-off sweeps, propagation audits, rater pools); lists of scalars
    longer than 10 are left out, at most ``limit`` pairs are returned."""
    out: list[tuple[str, Any]] = []

    def walk(value: Any, key: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            if len(value) <= 10 or any(isinstance(v, (dict, list)) for v in value):
                for i, v in enumerate(value[:20]):
                    walk(v, f"{key}[{i}]")
        else:
            out.append((key, value))

    walk(obj, prefix)
    return out
