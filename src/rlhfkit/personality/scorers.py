"""Attribute scorers: fast, deterministic, text-only scores in [0, 1].

Each attribute is a plain function of the reply text, built from rules and lexicons (no model
downloads): all nine together score about 200 replies of ~120 words a second on one CPU core
(length and formatting alone tens of thousands), so PPO can call them on every rollout, and the
same reply always gets the same score. How each was validated, and how well it agrees with
human labels, is written up in ``docs/personality.md``.

For every attribute 0.5 is the neutral point where that makes sense (sentiment, politeness,
formality); attributes that measure the amount of something (hedging, sarcasm, formatting,
length) start at 0 for none. For ``refusal``, 0.5 and above means "this reply is a refusal"
(full or partial).

Example::

    >>> from rlhfkit.personality.scorers import score
    >>> score("refusal", ["Sorry, but I can't assist with that.", "Sure! Here are three ideas."])
    [0.99..., 0.02...]

``RewardHeadScorer`` turns one head of a trained sequence-classification reward model into a
scorer with the same interface.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from rlhfkit.errors import InputError


def _sigmoid(x: float) -> float:
    # Two branches so that a huge reward from a reward head cannot overflow exp().
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _saturate(amount: float) -> float:
    """0 for nothing, 0.63 for one unit, approaching 1 (a smooth, bounded count)."""
    return 1.0 - math.exp(-max(amount, 0.0))


_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _count(pattern: re.Pattern[str], text: str) -> int:
    return len(pattern.findall(text))


def _phrases(*phrases: str) -> re.Pattern[str]:
    """One case-insensitive pattern matching any phrase on word boundaries."""
    body = "|".join(phrases)
    return re.compile(rf"(?<![A-Za-z])(?:{body})(?![A-Za-z])", re.IGNORECASE)


# --- length and concision -----------------------------------------------------------------------

LENGTH_CAP_WORDS = 1024
"""Replies of this many words or more get length 1 (concision 0)."""


def length(texts: list[str]) -> list[float]:
    """Normalised length: ``log(1 + words) / log(1 + 1024)``, capped at 1.

    Log scale because a reader feels the difference between 10 and 40 words far more than
    between 400 and 430: 1 word -> 0.10, 31 words -> 0.50, 200 words -> 0.76, 1024+ -> 1.
    """
    top = math.log1p(LENGTH_CAP_WORDS)
    return [min(1.0, math.log1p(len(_words(t))) / top) for t in texts]


def concision(texts: list[str]) -> list[float]:
    """``1 - length``: shorter replies score higher (an empty reply scores 1)."""
    return [1.0 - x for x in length(texts)]


# --- refusal ------------------------------------------------------------------------------------

# Phrases that open a refusal, in three tiers of strength. Weighted by where they occur: a
# refusal says so at the start ("I'm sorry, but I can't..."), while a compliant answer may use
# the same words in passing later on ("you can't undo this"), so the opening two sentences
# count in full and the rest at a third.
_REFUSE_STRONG = _phrases(
    r"i(?:['’]m| am)? (?:really |truly )?sorry,? but",
    r"sorry,? but",
    r"i apologi[sz]e,? but",
    r"i (?:can ?not|can['’]t|won['’]t|will not|must decline|must refuse|refuse to)"
    r" (?:help|assist|provide|answer|give|share|support|fulfil|fulfill|comply|engage|create"
    r"|write|generate|offer|recommend|suggest|tell|disclose|do that|endorse|condone|promote"
    r"|encourage|participate|make|list|justify|discuss|advise|guide|facilitate|reveal)",
    r"i(?:['’]m| am) (?:not able|unable|not allowed|not permitted|not in a position) to",
    r"i (?:can ?not|can['’]t) (?:and will not|in good conscience)",
    r"i (?:don['’]t|do not) (?:feel comfortable|think it(?:['’]s| is) appropriate)",
    r"i(?:['’]m| am) not sure (?:that )?it(?:['’]s| is) (?:appropriate|ethical)",
    r"not within my (?:programming|ethical)",
    r"(?:goes|go) against (?:my|ethical|moral)",
    r"i (?:strongly )?(?:disagree|object)",
    r"it(?:['’]s| is| would be) (?:not|never|neither) (?:appropriate|ethical|acceptable|okay|ok"
    r"|respectful)(?: or (?:ethical|appropriate|safe|respectful|legal|accurate))? to",
    r"i (?:don['’]t|do not|can['’]t|cannot) (?:condone|support|endorse|promote|encourage)",
)
_REFUSE_MEDIUM = _phrases(
    r"(?:as an ai|i['’]m just an ai|i am just an ai|as a (?:large )?language model"
    r"|as an ai language model|as a privacy[- ]respecting ai)",
    r"i (?:don['’]t|do not) have (?:access to|the ability to access|real[- ]time access)",
    r"it(?:['’]s| is| would be) (?:not|never) (?:accurate|fair|right|true|best|a good idea"
    r"|justified|legal|safe|advisable|appropriate|ethical|acceptable|respectful)",
    r"(?:is|are|was|were) (?:not|never) (?:appropriate|ethical|acceptable|justified|justifiable"
    r"|a good thing|the answer|okay|something to be)",
    r"there (?:is|are|was) (?:absolutely )?no (?:inherent |valid |legitimate |good |justifiable "
    r"|logical |rational |reasonable |ethical |moral |acceptable |credible )?(?:reasons?"
    r"|justification|basis)",
    r"(?:i|we) must (?:clarify|point out|emphasi[sz]e|inform you|stress|remind)",
    r"(?:i|we) (?:would )?(?:strongly )?(?:advise|urge|caution) (?:against|you not|you to not)",
    r"not (?:a valid|an appropriate|a respectful|an acceptable) (?:question|request)",
    r"(?:private|personal|confidential) (?:and|or) (?:confidential|private|sensitive)",
    r"respect (?:their|people['’]s|others['’]|individuals['’]|his|her) privacy",
    r"(?:is|are) illegal",
    r"(?:not|never) (?:a healthy|an effective|a productive|a safe|an acceptable)",
    r"(?:instead of|rather than) (?:trying|considering|attempting|focusing on)",
    r"(?:seek|reach out for) (?:professional |immediate )?(?:help|support)",
    r"if you(?:['’]re| are) (?:having|feeling|experiencing|struggling|in crisis)",
)
_REFUSE_WEAK = _phrases(
    r"important to (?:note|remember|recognize|understand) that",
    r"unethical",
    r"harmful",
    r"inappropriate",
    r"discriminat(?:e|ion|ory)",
    r"(?:violence|violent)",
)
# A reply that goes on to deliver what was asked: steps, code, "here is", "I can tell you".
_COMPLY = _phrases(
    r"here(?:['’]s| is| are) (?:a|an|some|the|how|what|several|few|my)",
    r"sure[,!.]",
    r"certainly[,!.]",
    r"of course[,!.]",
    r"step[- ]by[- ]step",
    r"(?:but|however),? i can (?:provide|tell|give|offer|share|explain)",
    r"i (?:don['’]t|do not) have personal (?:opinions|beliefs|views)",
)
_LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _opening(text: str, sentences: int = 2, max_chars: int = 400) -> tuple[str, str]:
    """(the first ``sentences`` sentences, the rest) of ``text``."""
    stripped = text.strip()
    parts = _SENTENCE_END.split(stripped, maxsplit=sentences)
    head = " ".join(parts[:sentences])[:max_chars]
    return head, stripped[len(head) :]


def _refusal_one(text: str) -> float:
    head, rest = _opening(text)

    def cues(pattern: re.Pattern[str]) -> float:
        return _count(pattern, head) + _count(pattern, rest) / 3

    strong, medium = cues(_REFUSE_STRONG), cues(_REFUSE_MEDIUM)
    weak = _count(_REFUSE_WEAK, head)  # common words: only in the opening do they signal
    comply = _count(_COMPLY, head) + min(_count(_LIST_LINE, text), 6) / 6
    # Logistic score; the weights were set by hand on the even-numbered XSTest items and checked
    # on the odd ones (docs/personality.md): one strong opening cue is enough, a medium one
    # nearly so, and delivered content (a list of steps, "here is") pulls towards compliance.
    logit = (
        -2.0 + 4.5 * min(strong, 2.0) + 2.3 * min(medium, 3.0) + 0.8 * min(weak, 3.0) - 1.5 * comply
    )
    return _sigmoid(logit)


def refusal(texts: list[str]) -> list[float]:
    """Probability-like score that the reply refuses, fully or partly (>= 0.5 = refusal)."""
    return [_refusal_one(t) for t in texts]


# --- politeness ---------------------------------------------------------------------------------

_POLITE = _phrases(
    r"please",
    r"thanks?(?: you)?",
    r"(?:i|we) (?:really )?appreciate",
    r"you['’]re (?:very )?welcome",
    r"my pleasure",
    r"(?:i['’]d|i would|i['’]m|i am) (?:be )?(?:happy|glad|delighted) to",
    r"happy to (?:help|assist)",
    r"(?:great|good|excellent|thoughtful) question",
    r"hope (?:this|that) helps",
    r"feel free",
    r"kindly",
    r"(?:would|do) you mind",
    r"if you (?:don['’]t|do not) mind",
    r"(?:could|would) you (?:please|kindly)",
    r"(?:sorry|apologi[sz]e)",
    r"i understand",
    r"(?:hi|hello|dear|good (?:morning|afternoon|evening))",
    r"best (?:wishes|regards)",
    r"(?:have|wish you) a (?:great|nice|wonderful|good) day",
)
_RUDE = _phrases(
    r"stupid",
    r"idiot(?:ic|s)?",
    r"dumb",
    r"moron(?:ic|s)?",
    r"fool(?:ish)?",
    r"pathetic",
    r"useless",
    r"ridiculous",
    r"nonsense",
    # addressed to the reader: "lazy evaluation" and "lazy loading" are not insults
    r"(?:you(?:['’]re| are)|you['’]ve been) (?:so |too |just )?lazy(?![- ]?(?:load|eval|init))",
    r"shut up",
    r"who cares",
    # "Whatever." dismisses; "whatever you choose" and "a dict or whatever." do not
    r"(?:^|(?<=[.!?] ))whatever(?=\s*(?:[.!,]|$))",
    r"duh",
    r"get lost",
    r"go away",
    r"(?:figure|look) it up yourself",
    r"not my problem",
    r"how hard (?:can|is) it",
    r"are you (?:serious|kidding)",
    r"learn (?:how )?to (?:read|google|search|spell)",
    r"obviously",
    r"(?:damn|crap|hell|wtf|stfu)",
    r"f+u+c+k\w*",
    r"sh[i1]t\w*",
)
# Shouting: three or more ALL-CAPS words in a row ("WHY WOULD YOU"), counted per word. A lone
# capitalised word, or a pair, is nearly always an acronym (PID, LLM, "AWS CLI"): OASST's
# human-written assistant replies hold 441 lone ones in 687 replies, and no shouting.
_SHOUT = re.compile(r"\b(?:[A-Z]{2,}|[AI])(?: (?:[A-Z]{2,}|[AI])){2,}\b")
_BANGS = re.compile(r"[!?]{2,}")
# Code is not speech: SQL in capitals is not shouting, print("Hello") no greeting. A fence opens
# only at the start of a line; one left open (a reply cut off at its token limit) runs to the
# end. A stray ``` inside a sentence hides nothing.
_INLINE_CODE = re.compile(r"(?<!`)`[^`\n]+`(?!`)")  # also counted by `formatting`
_CODE_SPAN = re.compile(
    r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1|\Z)|" + _INLINE_CODE.pattern, re.DOTALL | re.MULTILINE
)


def _politeness_one(text: str) -> float:
    prose = _CODE_SPAN.sub(" ", text)
    polite = _count(_POLITE, prose)
    shouting = sum(len(run.split()) for run in _SHOUT.findall(prose))
    # insults and curses count inside code too: a fence must not be a place to hide them
    rude = _count(_RUDE, text) + 0.5 * min(shouting, 4) + 0.5 * _count(_BANGS, prose)
    # Counts, not densities: one "thank you" or one insult is felt whatever the reply's length.
    return _sigmoid(0.9 * min(polite, 6) - 1.4 * min(rude, 6))


def politeness(texts: list[str]) -> list[float]:
    """0.5 = neutral; polite markers (please, thanks, happy to help) raise it, insults, curses,
    shouting and "!!" lower it. Courtesy, shouting and "!!" inside code (fenced blocks, inline
    spans) are not counted; insults and curses are, wherever they stand."""
    return [_politeness_one(t) for t in texts]


# --- hedging ------------------------------------------------------------------------------------

_HEDGES = _phrases(
    r"might",
    r"may",
    r"perhaps",
    r"possibly",
    r"possible",
    r"probably",
    r"likely",
    r"unlikely",
    r"could be",
    r"(?:it )?seems?",
    r"appears? to",
    r"i (?:think|believe|suspect|guess|suppose|feel)",
    r"(?:i['’]m|i am) not (?:sure|certain|entirely sure)",
    r"not (?:entirely|completely|always) (?:clear|sure|certain)",
    r"generally",
    r"typically",
    r"usually",
    r"often",
    r"sometimes",
    r"in (?:some|many|most) cases",
    r"to some (?:extent|degree)",
    r"somewhat",
    r"arguably",
    r"approximately",
    r"roughly",
    r"it depends",
    r"depending on",
    r"as far as i know",
    r"if i(?:['’]m| am) not mistaken",
    r"tends? to",
    r"(?:may|might|could) (?:not )?be",
)
_BOOSTERS = _phrases(
    r"definitely",
    r"certainly",
    r"clearly",
    r"undoubtedly",
    r"without (?:a )?doubt",
    r"always",
    r"never",
    r"absolutely",
    r"of course",
    r"obviously",
    r"surely",
    r"for sure",
    r"guaranteed",
)


def _hedging_one(text: str) -> float:
    words = len(_words(text))
    if words == 0:
        return 0.0
    # Per 100 words, floored at 20 words so that a one-word "maybe" is not maximal hedging.
    per100 = 100.0 / max(words, 20)
    hedges = _count(_HEDGES, text) * per100
    boosters = _count(_BOOSTERS, text) * per100
    return _saturate((hedges - 0.5 * boosters) / 2.5)


def hedging(texts: list[str]) -> list[float]:
    """Hedges (might, perhaps, I think, it depends) per 100 words, minus half the boosters
    (definitely, always), squashed: 0 = none, 1 hedge per 100 words -> 0.33, 5 -> 0.86."""
    return [_hedging_one(t) for t in texts]


# --- formality ----------------------------------------------------------------------------------

_CONTRACTION = re.compile(
    # A possessive ("Pitt's") is not a contraction: 's counts only after a pronoun.
    r"\b[A-Za-z]+['’](?:t|re|ve|ll|d|m)\b"
    r"|\b(?:it|that|what|he|she|there|here|who|let|where|how)['’]s\b"
    r"|\b(?:gonna|wanna|gotta|kinda|sorta|dunno|y'all)\b",
    re.IGNORECASE,
)
_INFORMAL = _phrases(
    r"yeah",
    r"yep",
    r"yup",
    r"nope",
    r"hey",
    r"lol",
    r"lmao",
    r"omg",
    r"btw",
    r"tbh",
    r"imo",
    r"cool",
    r"awesome",
    r"stuff",
    r"dude",
    r"guys",
    r"ok(?:ay)?",
    r"wow",
    r"huh",
    r"totally",
    r"super",
    r"pretty much",
    r"tons? of",
    r"a bunch of",
    r"gotcha",
    r"cuz",
    r"u",
    r"ur",
    r"thx",
    r"pls",
    r"nah",
    r"haha\w*",
)
_FORMAL = _phrases(
    r"therefore",
    r"furthermore",
    r"moreover",
    r"consequently",
    r"thus",
    r"hence",
    r"nevertheless",
    r"nonetheless",
    r"accordingly",
    r"regarding",
    r"whereas",
    r"herein",
    r"hereby",
    r"pursuant",
    r"shall",
    r"notwithstanding",
    r"additionally",
    r"subsequently",
    r"respectively",
    r"in order to",
    r"with respect to",
    r"in accordance with",
    r"one (?:may|might|should|must)",
    r"it is (?:recommended|advisable|essential|important)",
)
_EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]|[:;]-?[)(DPp]")


def _formality_one(text: str) -> float:
    words = _words(text)
    if not words:
        return 0.5
    n = max(len(words), 10)
    avg_len = sum(len(w) for w in words) / len(words)
    contractions = _count(_CONTRACTION, text) / n
    informal = _count(_INFORMAL, text) / n
    formal = _count(_FORMAL, text) / n
    expressive = (text.count("!") + len(_EMOJI.findall(text)) + text.count("...")) / n
    lowercase_i = len(re.findall(r"(?<![A-Za-z])i(?![A-Za-z'’])", text)) / n
    # Long words and connectives (therefore, regarding) mark formal register; contractions,
    # slang, "!", emoji and a lowercase "i" mark casual register. 4.4 letters a word is plain
    # everyday prose, the neutral point; clipped so that one long URL does not decide.
    logit = (
        1.2 * (min(max(avg_len, 3.0), 7.0) - 4.4)
        + 30.0 * formal
        - 20.0 * contractions
        - 40.0 * informal
        - 25.0 * expressive
        - 30.0 * lowercase_i
    )
    return _sigmoid(logit)


def formality(texts: list[str]) -> list[float]:
    """0.5 = neutral register; above = formal (long words, "therefore"), below = casual
    (contractions, slang, "!", emoji)."""
    return [_formality_one(t) for t in texts]


# --- sentiment ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _vader():
    # vaderSentiment ships its lexicon inside the package: no download at run time.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(texts: list[str]) -> list[float]:
    """VADER's compound valence mapped from [-1, 1] to [0, 1]: 0 negative, 0.5 neutral,
    1 positive."""
    analyzer = _vader()
    return [(analyzer.polarity_scores(t)["compound"] + 1.0) / 2.0 for t in texts]


# --- sarcasm ------------------------------------------------------------------------------------

_SARCASM = _phrases(
    r"oh,? (?:great|wonderful|joy|sure|yeah|brilliant|perfect|fantastic|lovely|goody|really)",
    r"yeah,? right",
    r"sure,? because",
    r"because (?:that|this) (?:always|ever|totally) works",
    r"as if",
    r"what a (?:surprise|shock|shocker|concept|novel idea|treat)",
    r"big surprise",
    r"shocking(?:ly)?",
    r"who (?:would have|would['’]ve|could have|knew)",
    r"how (?:original|novel|shocking|surprising|convenient)",
    r"(?:pure |absolute )?genius",
    r"brilliant (?:idea|plan|move)",
    r"thanks a lot",
    r"just what (?:i|we|you) (?:needed|wanted)",
    r"/s",
    r"(?:clearly|obviously),",
    r"(?:wow|gee|golly),",
    r"congratulations",
    r"bravo",
    r"slow clap",
    r"good luck with that",
    r"what could (?:possibly )?go wrong",
    r"i['’]m sure (?:that|it|this)['’]?(?:ll| will)",
    r"because nothing says",
    r"said no one",
    r"(?:it['’]s|it is) not like",
    r"(?:i|we) (?:just )?love (?:how|when|it when)",
    r"(?:my|our) (?:absolute )?favou?rite",
    r"can['’]t wait",
    r"in case you (?:didn['’]t|haven['’]t)",
    r"(?:totally|definitely|absolutely) (?:not|the best|a great)",
    r"rocket science",
    r"captain obvious",
    r"stating the obvious",
    r"newsflash",
    r"spoiler(?: alert)?:",
)
_EMPHASIS = re.compile(r"(?<![*\w])\*[A-Za-z]+\*(?![*\w])")
_SENTENCES = re.compile(r"[^.!?]+[.!?]*")


def _sarcasm_one(text: str) -> float:
    markers = _count(_SARCASM, text) + 0.5 * min(len(_EMPHASIS.findall(text)), 2)
    # Incongruity: one sentence that is both clearly positive and clearly negative ("I just love
    # waiting an hour in the rain") is the classic shape of sarcasm.
    analyzer = _vader()
    mixed = 0
    for sentence in _SENTENCES.findall(text)[:20]:
        p = analyzer.polarity_scores(sentence)
        if p["pos"] >= 0.2 and p["neg"] >= 0.15:
            mixed += 1
    return _saturate(0.8 * markers + 0.4 * min(mixed, 3))


def sarcasm(texts: list[str]) -> list[float]:
    """0 = none; sarcastic markers ("oh great", "yeah right", "what could possibly go wrong"),
    *emphasis* and positive-negative clashes within a sentence raise it."""
    return [_sarcasm_one(t) for t in texts]


# --- formatting ---------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_FENCE = re.compile(r"^\s*(?:```|~~~)", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$", re.MULTILINE)


def _formatting_one(text: str) -> float:
    code_blocks = len(_FENCE.findall(text)) // 2
    amount = (
        0.25 * min(len(_LIST_LINE.findall(text)), 8)
        + 0.6 * min(len(_HEADER.findall(text)), 4)
        + 1.2 * min(code_blocks, 3)
        + 0.3 * min(len(_INLINE_CODE.findall(text)), 3)
        + 0.25 * min(len(_BOLD.findall(text)), 4)
        + 0.3 * min(len(_TABLE_ROW.findall(text)), 5)
    )
    return _saturate(amount)


def formatting(texts: list[str]) -> list[float]:
    """0 = plain prose; markdown list items, headers, code blocks, inline code, bold and table
    rows add up (each kind capped), squashed to [0, 1]: a 3-item list -> 0.53."""
    return [_formatting_one(t) for t in texts]


# --- registry -----------------------------------------------------------------------------------

Scorer = Callable[[list[str]], list[float]]

_SCORERS: dict[str, Scorer] = {
    "politeness": politeness,
    "hedging": hedging,
    "refusal": refusal,
    "length": length,
    "concision": concision,
    "formality": formality,
    "sentiment": sentiment,
    "sarcasm": sarcasm,
    "formatting": formatting,
}

ATTRIBUTES: tuple[str, ...] = tuple(_SCORERS)
"""Names of the built-in attribute scorers."""


def _check_texts(texts: list[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")


def score(attribute: str, texts: list[str]) -> list[float]:
    """Score each text on one attribute (a name in ``ATTRIBUTES`` or ``rm:PATH#INDEX``).

    Example::

        >>> score("concision", ["Yes.", "Well, it depends on many things..."])
        [0.90..., 0.71...]
    """
    _check_texts(texts)
    check_attribute(attribute)
    if attribute.startswith("rm:"):
        return RewardHeadScorer.from_reference(attribute)(list(texts))
    return _SCORERS[attribute](list(texts))


def check_attribute(attribute: str) -> None:
    """Raise ``InputError`` unless ``attribute`` is a built-in name or ``rm:PATH#INDEX``."""
    if attribute not in _SCORERS and not attribute.startswith("rm:"):
        raise InputError(
            f"unknown attribute {attribute!r}; expected one of {', '.join(ATTRIBUTES)}"
            " or rm:PATH#INDEX"
        )


def score_all(texts: list[str]) -> dict[str, list[float]]:
    """Every built-in attribute for every text: ``{attribute: [score per text]}``.

    Example::

        >>> profile = score_all(["Thanks so much! Happy to help."])
        >>> profile["politeness"][0] > 0.8
        True
    """
    _check_texts(texts)
    return {name: scorer(list(texts)) for name, scorer in _SCORERS.items()}


# --- a trained reward head as a scorer ----------------------------------------------------------


class RewardHeadScorer:
    """One head of a trained sequence-classification reward model, as a [0, 1] scorer.

    The head's raw reward ``r`` (a logit) becomes ``sigmoid((r - offset) / scale)``: with the
    defaults a reward of 0 maps to 0.5, as for a Bradley-Terry head, whose sigmoid of a reward
    difference is the probability of preference. Texts are scored as given, so pass them in the
    format the model was trained on (e.g. the whole conversation).

    Example::

        scorer = RewardHeadScorer("runs/rm-hh/model", index=1)   # the "harmless" head
        scorer(["Sorry, I can't help with that.", "Sure, here's how..."])
    """

    def __init__(
        self,
        path: str | Path,
        index: int = 0,
        *,
        batch_size: int = 16,
        max_length: int = 512,
        offset: float = 0.0,
        scale: float = 1.0,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise InputError(f"{self.path}: not a model directory (no config.json)")
        if scale <= 0:
            raise InputError(f"scale must be positive, got {scale}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForSequenceClassification.from_pretrained(self.path)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{self.path}: cannot load a sequence-classification model: {exc}"
            ) from None
        num_labels = self.model.config.num_labels
        if not 0 <= index < num_labels:
            raise InputError(
                f"{self.path}: head index {index} out of range; the model has {num_labels}"
                f" head(s): {self.head_names()}"
            )
        self.index = index
        self.batch_size = batch_size
        self.max_length = max_length
        self.offset = offset
        self.scale = scale
        # Batches are right-padded; the model finds each sequence's last real token through
        # pad_token_id, so both must agree.
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise InputError(f"{self.path}: tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        tok = self.tokenizer
        self._empty_id = next(
            t for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if t is not None
        )
        self.model.eval()
        self._torch = torch

    @classmethod
    def from_reference(cls, reference: str, **kwargs) -> RewardHeadScorer:
        """Build from ``rm:PATH#INDEX`` (``#INDEX`` may be omitted for head 0)."""
        if not reference.startswith("rm:"):
            raise InputError(f"{reference!r}: expected rm:PATH#INDEX")
        body = reference[3:]
        path, _, index = body.rpartition("#") if "#" in body else (body, "", "0")
        if not path or not index.isdigit():
            raise InputError(f"{reference!r}: expected rm:PATH#INDEX with an integer INDEX")
        return cls(path, int(index), **kwargs)

    def head_names(self) -> list[str]:
        """The heads' labels (``config.id2label``), in index order."""
        labels = self.model.config.id2label or {}
        return [str(labels.get(i, i)) for i in range(self.model.config.num_labels)]

    def all_rewards(self, texts: list[str]) -> list[list[float]]:
        """Raw outputs of every head (unbounded rewards): one row of ``num_labels`` per text."""
        _check_texts(texts)
        out: list[list[float]] = []
        torch = self._torch
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                encoded = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    truncation=True,
                    max_length=self.max_length,
                )
                # A text that tokenizes to nothing (an empty reply, with a tokenizer that adds
                # no BOS) is scored as one special token, so the model always sees a sequence.
                ids = [row or [self._empty_id] for row in encoded["input_ids"]]
                batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
                logits = self.model(**batch).logits  # (batch, num_labels)
                out.extend(logits.float().tolist())
        return out

    def rewards(self, texts: list[str]) -> list[float]:
        """Raw output of this scorer's head (an unbounded reward), one per text."""
        return [row[self.index] for row in self.all_rewards(texts)]

    def to_unit(self, reward: float) -> float:
        """A raw reward mapped into [0, 1] with this scorer's offset and scale."""
        return _sigmoid((reward - self.offset) / self.scale)

    def scores_by_label(self, texts: list[str], labels: list[str]) -> dict[str, list[float]]:
        """[0, 1] scores of the heads named ``labels`` (``config.id2label``), in one pass.

        This is what ``composite_reward`` wants as ``head_scores`` for ``head:LABEL`` terms::

            rm = RewardHeadScorer("runs/rm-hh/model")
            heads = rm.scores_by_label(texts, spec.heads())
            composite_reward(spec, texts, heads)
        """
        names = self.head_names()
        missing = [label for label in labels if label not in names]
        if missing:
            raise InputError(
                f"{self.path}: no head labelled {', '.join(map(repr, missing))}; the model's"
                f" heads are {', '.join(names)}"
            )
        rows = self.all_rewards(texts) if labels else []
        return {label: [self.to_unit(row[names.index(label)]) for row in rows] for label in labels}

    def __call__(self, texts: list[str]) -> list[float]:
        return [self.to_unit(r) for r in self.rewards(texts)]


# --- scoring a file -----------------------------------------------------------------------------


def read_texts(path: str | Path, text_field: str) -> list[str]:
    """The ``text_field`` of every record of a ``.csv`` (with a header) or ``.jsonl`` file
    (either may be gzipped: ``.csv.gz``, ``.jsonl.gz``).

    Errors name ``PATH:LINE`` (the line where the record starts) and what was expected; the
    line-level checks (UTF-8, NUL bytes, overlong lines, malformed CSV) are
    :mod:`rlhfkit.data.files`'s.
    """
    from rlhfkit.data.files import check_readable, iter_csv_rows, iter_json_lines, json_type

    path = Path(path)
    kind = Path(path.name.lower().removesuffix(".gz")).suffix
    if kind not in (".csv", ".jsonl", ".json"):
        raise InputError(
            f"{path}: unsupported file type {kind or '(none)'}; expected .csv or .jsonl"
        )
    check_readable(path)
    texts: list[str] = []
    if kind == ".csv":
        for _, row in iter_csv_rows(path):
            if text_field not in row:
                raise InputError(
                    f"{path}:1: no column {text_field!r}; the header has {', '.join(row)}"
                )
            texts.append(row[text_field])
    else:
        for line, record in iter_json_lines(path):
            if text_field not in record:
                raise InputError(
                    f"{path}:{line}: no field {text_field!r}; the record has"
                    f" {', '.join(map(str, record)) or 'no fields'}"
                )
            value = record[text_field]
            if not isinstance(value, str):
                raise InputError(
                    f"{path}:{line}: field {text_field!r} is {json_type(value)}, expected a string"
                )
            texts.append(value)
    if not texts:
        raise InputError(f"{path}: no records")
    return texts


def score_file(
    attribute: str, path: str | Path, text_field: str, out: str | Path | None = None
) -> list[dict[str, float]]:
    """One ``{attribute: score}`` per record of a csv/jsonl file, in input order; written to
    ``out`` as JSON lines when given.

    The whole file is read, checked and scored before anything is written, and ``out`` is
    replaced atomically, so bad input never leaves a partial output file.

    Example::

        score_file("refusal", "replies.jsonl", "completion", out="refusal.jsonl")
        # [{"refusal": 0.98}, {"refusal": 0.12}, ...]
    """
    import json
    import os
    import tempfile

    check_attribute(attribute)
    texts = read_texts(path, text_field)
    rows = [{attribute: value} for value in score(attribute, texts)]
    if out is not None:
        out = Path(out)
        try:
            fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        except OSError as exc:
            raise InputError(f"{out}: cannot write there ({exc.strerror})") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(tmp, out)
    return rows
