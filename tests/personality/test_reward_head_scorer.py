"""RewardHeadScorer on a tiny randomly initialised Llama reward model saved to a temp dir."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.errors import InputError
from rlhfkit.personality import PersonalitySpec, RewardHeadScorer, composite_reward, score

TEXTS = [
    "the cat sat on the mat",
    "a dog ran",
    "the bird sang a long long song in the tree today",
    "",
    "unknownword another unknownword",
]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "the",
        "cat",
        "sat",
        "on",
        "mat",
        "a",
        "dog",
        "ran",
        "bird",
        "sang",
        "long",
        "song",
        "in",
        "tree",
        "today",
    ]
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    vocab.update({w: i + 4 for i, w in enumerate(words)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "helpful", 1: "harmless"},
        label2id={"helpful": 0, "harmless": 1},
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForSequenceClassification(config)
    # A random score head gives rewards near 0; scale it so the sigmoid is not flat at 0.5.
    with torch.no_grad():
        model.score.weight.mul_(50.0)
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _reference_rewards(path, index: int, texts: list[str]) -> list[float]:
    """Each text scored alone (no padding), straight through transformers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt")
            out.append(model(**ids).logits[0, index].item())
    return out


def test_scores_are_sigmoid_of_the_head_and_batching_does_not_change_them(reward_model_dir):
    texts = [t for t in TEXTS if t]
    one_by_one = RewardHeadScorer(reward_model_dir, index=1, batch_size=1)
    batched = RewardHeadScorer(reward_model_dir, index=1, batch_size=4)
    rewards = one_by_one.rewards(texts)
    # Right padding with the right pad_token_id: padded batches give the unpadded rewards.
    assert batched.rewards(texts) == pytest.approx(rewards, abs=1e-4)
    expected = _reference_rewards(reward_model_dir, 1, texts)
    assert rewards == pytest.approx(expected, abs=1e-4)
    scores = batched(texts)
    assert scores == pytest.approx([1 / (1 + math.exp(-r)) for r in rewards], abs=1e-6)
    assert all(0.0 <= s <= 1.0 for s in scores)
    # Different texts get different scores: the head is really read, not a constant.
    assert max(scores) - min(scores) > 0.01


def test_empty_text_is_scored_like_a_lone_special_token(reward_model_dir):
    scorer = RewardHeadScorer(reward_model_dir, index=0, batch_size=2)
    # The tiny tokenizer adds no BOS, so "" has no tokens; it must not crash or poison the batch.
    alone = scorer([""])
    assert scorer(["", "the cat"])[0] == pytest.approx(alone[0], abs=1e-4)
    assert scorer(["the cat", ""])[1] == pytest.approx(alone[0], abs=1e-4)
    assert scorer(["the cat", ""])[0] == pytest.approx(scorer(["the cat"])[0], abs=1e-4)


def test_heads_differ_and_names_come_from_the_config(reward_model_dir):
    helpful = RewardHeadScorer(reward_model_dir, index=0)
    harmless = RewardHeadScorer(reward_model_dir, index=1)
    assert helpful.head_names() == ["helpful", "harmless"]
    assert helpful(TEXTS[:3]) != harmless(TEXTS[:3])


def test_scores_by_label_feed_the_composite_reward(reward_model_dir):
    rm = RewardHeadScorer(reward_model_dir)
    texts = TEXTS[:3]
    heads = rm.scores_by_label(texts, ["harmless", "helpful"])
    assert heads["helpful"] == pytest.approx(RewardHeadScorer(reward_model_dir, 0)(texts))
    assert heads["harmless"] == pytest.approx(RewardHeadScorer(reward_model_dir, 1)(texts))
    spec = PersonalitySpec("hh", "d", {"head:helpful": 1.0, "head:harmless": -2.0}, 1.0)
    expected = [
        (a - 0.5) - 2.0 * (b - 0.5)
        for a, b in zip(heads["helpful"], heads["harmless"], strict=True)
    ]
    assert composite_reward(spec, texts, rm.scores_by_label(texts, spec.heads())) == pytest.approx(
        expected
    )
    with pytest.raises(
        InputError, match="no head labelled 'honest'; the model's heads are helpful"
    ):
        rm.scores_by_label(texts, ["helpful", "honest"])


def test_offset_and_scale(reward_model_dir):
    plain = RewardHeadScorer(reward_model_dir, index=0)
    shifted = RewardHeadScorer(reward_model_dir, index=0, offset=1.0, scale=2.0)
    rewards = plain.rewards(TEXTS[:2])
    assert shifted(TEXTS[:2]) == pytest.approx([1 / (1 + math.exp(-(r - 1) / 2)) for r in rewards])


def test_rm_reference_in_score_and_composite(reward_model_dir):
    ref = f"rm:{reward_model_dir}#1"
    direct = RewardHeadScorer(reward_model_dir, index=1)(TEXTS[:2])
    assert score(ref, TEXTS[:2]) == pytest.approx(direct)
    spec = PersonalitySpec("x", "x", {ref: 2.0}, 1.0)
    assert composite_reward(spec, TEXTS[:2]) == pytest.approx([2 * (s - 0.5) for s in direct])


def test_bad_model_references(reward_model_dir, tmp_path):
    with pytest.raises(InputError, match="head index 2 out of range.*2 head"):
        RewardHeadScorer(reward_model_dir, index=2)
    with pytest.raises(InputError, match="not a model directory"):
        RewardHeadScorer(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load"):
        RewardHeadScorer(tmp_path)
    with pytest.raises(InputError, match="integer INDEX"):
        RewardHeadScorer.from_reference(f"rm:{reward_model_dir}#first")
    with pytest.raises(InputError, match="scale must be positive"):
        RewardHeadScorer(reward_model_dir, scale=0)
