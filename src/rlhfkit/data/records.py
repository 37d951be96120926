"""The two record types every reader yields and every trainer consumes.

A *prompt* is always a conversation: a list of ``{"role", "content"}`` messages ending with the
user's turn (roles: system, user, assistant). Responses are the assistant's final turn as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]


@dataclass
class PreferencePair:
    """One judgment: ``chosen`` was preferred over ``rejected`` as a reply to ``prompt``."""

    prompt: list[Message]
    chosen: str
    rejected: str
    rater_id: str | None = None
    """Who judged; None when the source does not say."""
    labels: dict[str, Any] = field(default_factory=dict)
    """Attribute labels, e.g. {"helpful": 1, "harmful": 0}; per-response labels nest under
    "chosen"/"rejected"."""
    margin: float | None = None
    """Preference strength (larger = clearer); None when unknown."""
    tie: bool = False
    """The rater judged the two equal; chosen/rejected order is then arbitrary."""
    item_id: str | None = None
    """Groups judgments of the same item (for agreement across raters)."""
    source: str | None = None
    """Where the record came from: ``path:line``."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Anything else the source carried (kept for provenance)."""


@dataclass
class Example:
    """A prompt with one response: a demonstration (label None) or unpaired feedback (bool)."""

    prompt: list[Message]
    completion: str
    label: bool | None = None
    """True = thumbs up / desirable, False = thumbs down; None for a demonstration."""
    rater_id: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    """Extra labels (e.g. XSTest annotations, OASST quality labels)."""
    item_id: str | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
