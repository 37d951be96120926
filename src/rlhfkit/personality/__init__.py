"""Personalities: attribute scorers, personality specs and the composite reward they define.

``scorers`` turns reply text into [0, 1] scores (politeness, refusal, concision, ...);
``spec`` loads a personality (weights over those scores and reward heads) and computes its
composite reward.
"""

from rlhfkit.personality.scorers import (
    ATTRIBUTES,
    RewardHeadScorer,
    check_attribute,
    read_texts,
    score,
    score_all,
    score_file,
)
from rlhfkit.personality.spec import (
    DEFAULT_SPEC,
    PersonalitySpec,
    builtin_specs,
    composite_reward,
    load_spec,
    parse_spec,
    term_spreads,
)

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_SPEC",
    "PersonalitySpec",
    "RewardHeadScorer",
    "builtin_specs",
    "check_attribute",
    "composite_reward",
    "load_spec",
    "parse_spec",
    "term_spreads",
    "read_texts",
    "score",
    "score_all",
    "score_file",
]
