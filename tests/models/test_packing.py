"""Packed batches: layout by hand, and packed forwards equal padded ones (values and gradients)."""

import pytest
import torch

from rlhfkit.models import tiny_policy
from rlhfkit.models.chat import right_pad
from rlhfkit.models.heads import ValueModel, load_reward_model
from rlhfkit.models.packing import Document, pack
from rlhfkit.train.base import SelectiveLM

PAD = 0


def test_layout_by_hand():
    # lengths 5 and 2: width 5, so they need two rows; the 2-token one has room for nothing else
    docs = [Document([11, 12], [[13], [14, 15]]), Document([], [[21, 22]])]
    p = pack(docs, PAD)
    assert p.input_ids.tolist() == [[11, 12, 13, 14, 15], [21, 22, PAD, PAD, PAD]]
    # positions restart per sequence; each continuation continues the prefix's numbering
    assert p.position_ids.tolist() == [[0, 1, 2, 2, 3], [0, 1, 0, 0, 0]]
    assert p.n_sequences == 3 and p.real_tokens == 7
    # sequence ends: prefix+[13] ends at 2, prefix+[14, 15] at 4, [21, 22] at 5 + 1
    assert p.ends.tolist() == [2, 4, 6]
    # 13 is predicted by 12 (index 1); 14 by 12 too (it does not see 13); 15 by 14;
    # 21 has no predictor (empty prefix), 22 by 21
    assert p.predict.tolist() == [1, 1, 3, 5]
    assert p.targets.tolist() == [13, 14, 15, 22]
    assert p.sequence.tolist() == [0, 1, 1, 2]
    m = p.attention_mask[0, 0]
    assert m[3].tolist() == [True, True, False, True, False]  # 14 sees the prompt, not 13
    assert m[4].tolist() == [True, True, False, True, True]
    pad_rows = p.attention_mask[1, 0, 2:]
    assert pad_rows.sum(-1).tolist() == [1, 1, 1]  # padding sees only itself: no empty row


def test_short_documents_share_a_row_and_never_cost_more_than_padding():
    docs = [Document([1] * 10, [[2] * 6]), Document([3] * 3, [[4] * 2]), Document([5], [[6] * 3])]
    p = pack(docs, PAD)
    assert p.input_ids.shape == (2, 16)  # 16 + (5 + 4) in two rows instead of three
    assert p.input_ids.numel() <= 3 * 16
    assert p.per_sequence_sum(torch.ones(len(p.targets))).tolist() == [6.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "docs, message",
    [([], "no documents"), ([Document([1], [])], "at least one continuation")],
)
def test_bad_documents_are_clear_errors(docs, message):
    with pytest.raises(ValueError, match=message):
        pack(docs, PAD)


def _sequences():
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    replies = [[[20, 21, 22], [23]], [[24, 25, 26, 27, 28, 29]], [[30, 31], [32, 33, 34]]]
    return prompts, replies


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_padded_logits_with_gradients(attn):
    lm = tiny_policy(seed=1).model
    lm.config._attn_implementation = attn
    model = SelectiveLM(lm)
    prompts, replies = _sequences()
    # padded reference: one full sequence per (prompt, reply), logits predicting reply tokens
    seqs = [(p, r) for p, rs in zip(prompts, replies, strict=True) for r in rs]
    ids, attn_mask = right_pad([p + r for p, r in seqs], PAD)
    select = torch.zeros_like(attn_mask, dtype=torch.bool)
    for row, (p, r) in enumerate(seqs):
        select[row, len(p) - 1 : len(p) + len(r) - 1] = True
    padded = model(ids, attn_mask, select)
    packed_batch = pack([Document(p, rs) for p, rs in zip(prompts, replies, strict=True)], PAD)
    packed = model(packed_batch)
    assert packed_batch.targets.tolist() == [t for _, r in seqs for t in r]
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)
    grads = []
    for logits in (padded, packed):
        lm.zero_grad()
        logits.logsumexp(-1).sum().backward(retain_graph=True)
        grads.append(torch.cat([q.grad.flatten() for q in lm.parameters() if q.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)


def test_packed_values_equal_padded_values():
    value = ValueModel(load_reward_model("tiny").model)
    prompts, replies = _sequences()
    seqs = [(p, r) for p, rs in zip(prompts, replies, strict=True) for r in rs]
    ids, attn_mask = right_pad([p + r for p, r in seqs], PAD)
    full = value(ids, attn_mask)  # (n, seq)
    expected = torch.cat(
        [full[i, len(p) - 1 : len(p) + len(r) - 1] for i, (p, r) in enumerate(seqs)]
    )
    packed = value(pack([Document(p, rs) for p, rs in zip(prompts, replies, strict=True)], PAD))
    torch.testing.assert_close(packed, expected, rtol=1e-4, atol=1e-5)


def test_pack_rows_scores_equal_padded_scores_on_either_side():
    from rlhfkit.models.chat import left_pad
    from rlhfkit.models.heads import RewardModel
    from rlhfkit.models.packing import pack_rows

    scorer = RewardModel(load_reward_model("tiny").model)
    seqs = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16]]
    right, left = right_pad(seqs, PAD), left_pad(seqs, PAD)
    expected = scorer(*right)
    for ids, mask in (right, left):
        torch.testing.assert_close(scorer(pack_rows(ids, mask)), expected, rtol=1e-4, atol=1e-5)


def test_attention_that_ignores_the_mask_or_a_short_window_is_refused():
    from rlhfkit.models.packing import packed_hidden

    lm = tiny_policy(seed=1).model
    batch = pack([Document([5, 6, 7], [[8, 9]])], PAD)
    lm.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="sdpa, eager or flex_attention"):
        packed_hidden(lm.get_decoder(), batch)
    lm.config._attn_implementation = "sdpa"
    lm.config.sliding_window = 3
    with pytest.raises(ValueError, match="sliding window of 3"):
        packed_hidden(lm.get_decoder(), batch)
