"""Shared training maths, checked against arithmetic written out by hand."""

from __future__ import annotations

import doctest
import json
import math

import pytest
import torch

from rlhfkit.errors import InputError
from rlhfkit.train import common
from rlhfkit.train.common import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    exact_div,
    first_true_index,
    gae,
    gae_loop,
    last_token_index,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    per_token_kl_rewards,
    seed_everything,
    sequence_logprobs,
    truncate_after_eos,
)


def test_docstring_examples_hold():
    assert doctest.testmod(common).failed == 0


# ---------------------------------------------------------------- batch arithmetic and seeding


def test_exact_div_divides():
    assert exact_div(64, 8, "batch") == 8


@pytest.mark.parametrize(("a", "b"), [(10, 3), (10, 0)])
def test_exact_div_names_what_is_wrong(a, b):
    with pytest.raises(InputError, match=rf"rollout_batch_size / mini_batch_size: {a} .*{b}"):
        exact_div(a, b, "rollout_batch_size / mini_batch_size")


def test_seed_everything_repeats_random_draws():
    seed_everything(3)
    first = torch.rand(4)
    seed_everything(3)
    assert torch.equal(first, torch.rand(4))


# ---------------------------------------------------------------- masked statistics


def test_masked_mean_sum_ignore_padding_even_nan():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, float("inf"), 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_sum(x, mask).item() == 1 + 2 + 4 + 6
    assert masked_mean(x, mask).item() == (1 + 2 + 4 + 6) / 4
    assert masked_mean(x, mask, dim=1).tolist() == [1.5, 5.0]


def test_masked_mean_of_nothing_is_zero_not_nan():
    assert masked_mean(torch.ones(3), torch.zeros(3)).item() == 0.0


def test_masked_var_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 1000.0])
    mask = torch.tensor([True, True, True, True, False])
    # mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(5 / 4)
    assert masked_var(x, mask, unbiased=True).item() == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(x, torch.tensor([True, False, False, False, False]))


def test_masked_whiten_uses_valid_tokens_only():
    x = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    out = masked_whiten(x, mask)
    # valid values 1, 2, 3, 4: mean 2.5, unbiased std sqrt(5/3)
    std = math.sqrt(5 / 3)
    expected = [[(1 - 2.5) / std, (2 - 2.5) / std, 0.0], [(3 - 2.5) / std, (4 - 2.5) / std, 0.0]]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-6)
    # Changing what sits under the padding changes nothing.
    junk = x.clone()
    junk[0, 2], junk[1, 2] = 1e6, float("nan")
    assert torch.equal(masked_whiten(junk, mask), out)


def test_masked_whiten_without_shift_keeps_mean():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, -50.0])
    mask = torch.tensor([1, 1, 1, 1, 0])
    out = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(out, mask).item() == pytest.approx(2.5)
    assert masked_var(out, mask).item() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- log-probs and entropy


def test_logprobs_divide_logits_by_temperature():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    # T = 2: z = (0.5, 1, 1.5); log p(2) = 1.5 - log(e^0.5 + e^1 + e^1.5)
    expected = 1.5 - math.log(math.exp(0.5) + math.exp(1.0) + math.exp(1.5))
    got = logprobs_from_logits(logits, torch.tensor([2]), temperature=2.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    at_one = 3.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(3.0))
    assert logprobs_from_logits(logits, torch.tensor([2])).item() == pytest.approx(at_one, abs=1e-6)


def test_logprobs_match_log_softmax_for_batches_and_bf16():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)  # (batch, seq, vocab)
    labels = torch.randint(0, 11, (3, 5))
    reference = torch.log_softmax(logits / 0.7, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    got = logprobs_from_logits(logits, labels, temperature=0.7)
    assert got.shape == (3, 5)
    assert torch.allclose(got, reference, atol=1e-6)
    low = logprobs_from_logits(logits.bfloat16(), labels, temperature=0.7)
    assert low.dtype == torch.float32
    assert torch.allclose(low, reference, atol=0.05)


def test_entropy_by_hand_with_temperature():
    # Uniform over 4 tokens: log 4.
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4), abs=1e-6)
    # logits (0, 2 ln 3) at T = 2 become (0, ln 3): p = (1/4, 3/4).
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    got = entropy_from_logits(torch.tensor([[[0.0, 2 * math.log(3)]]]), temperature=2.0)
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def _tiny_lm():
    # GPT-2 on purpose: its learned absolute positions make left padding visible when position
    # ids are wrong (rotary models are blind to a uniform shift of every position).
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=32,
        n_positions=64,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=1,
        eos_token_id=2,
    )
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config).eval()


def test_sequence_logprobs_alignment_and_padding_side():
    model = _tiny_lm()
    prompt, response, pad = [5, 6, 7], [8, 9], 0
    # Row 0 right-padded, row 1 the same text left-padded.
    right = prompt + response + [pad, pad]
    left = [pad, pad] + prompt + response
    input_ids = torch.tensor([right, left])
    attention = torch.tensor([[1] * 5 + [0, 0], [0, 0] + [1] * 5])
    response_mask = torch.tensor([[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        logp = sequence_logprobs(model, input_ids, attention, response_mask, temperature=0.5)
    assert logp.shape == (2, 6)  # (batch, seq - 1)
    # Column t scores token t + 1; for the unpadded text compute it by hand with log_softmax.
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0]  # (5, vocab)
    by_hand = [torch.log_softmax(logits[t - 1] / 0.5, -1)[tok] for t, tok in [(3, 8), (4, 9)]]
    assert torch.allclose(logp[0, 2:4], torch.stack(by_hand), atol=1e-5)
    assert torch.allclose(logp[1, 4:6], torch.stack(by_hand), atol=1e-5)
    # Everything outside the response is exactly zero.
    assert torch.count_nonzero(logp[0, [0, 1, 4, 5]]) == 0
    assert torch.count_nonzero(logp[1, :4]) == 0
    # Recomputing gives bit-identical values: PPO's first ratio must be exactly 1.
    with torch.no_grad():
        again = sequence_logprobs(model, input_ids, attention, response_mask, temperature=0.5)
    assert torch.equal(logp, again)


# ---------------------------------------------------------------- indexing and truncation


def test_first_true_index_with_and_without_hits():
    mask = torch.tensor([[0, 0, 1, 1], [1, 0, 0, 1], [0, 0, 0, 0]])
    assert first_true_index(mask).tolist() == [2, 0, 4]


def test_last_token_index_right_left_and_empty():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]
    assert last_token_index(torch.zeros(1, 3)).tolist() == [-1]


def test_last_token_index_picks_same_score_for_left_and_right_padding():
    # Hidden states of the same 3 real tokens under both paddings: the score must agree.
    hidden_right = torch.tensor([[10.0, 20.0, 30.0, -1.0]])
    hidden_left = torch.tensor([[-1.0, 10.0, 20.0, 30.0]])
    idx_right = last_token_index(torch.tensor([[1, 1, 1, 0]]))
    idx_left = last_token_index(torch.tensor([[0, 1, 1, 1]]))
    assert hidden_right[0, idx_right].item() == hidden_left[0, idx_left].item() == 30.0


@pytest.mark.parametrize(
    ("tokens", "expected_tokens", "expected_mask", "expected_has_eos"),
    [
        ([5, 6, 7, 8], [5, 6, 7, 8], [1, 1, 1, 1], False),  # no EOS: keep everything
        ([2, 6, 7, 8], [2, 0, 0, 0], [1, 0, 0, 0], True),  # EOS first
        ([5, 6, 7, 2], [5, 6, 7, 2], [1, 1, 1, 1], True),  # EOS last
        ([5, 2, 7, 2], [5, 2, 0, 0], [1, 1, 0, 0], True),  # only the first EOS counts
    ],
)
def test_truncate_after_eos(tokens, expected_tokens, expected_mask, expected_has_eos):
    out, mask, has_eos = truncate_after_eos(torch.tensor([tokens]), eos_id=2, pad_id=0)
    assert out.tolist() == [expected_tokens]
    assert mask.dtype == torch.bool and mask.int().tolist() == [expected_mask]
    assert has_eos.tolist() == [expected_has_eos]


def test_truncate_after_eos_rows_are_independent():
    tokens = torch.tensor([[2, 5, 5], [5, 5, 5], [5, 2, 5]])
    out, mask, has_eos = truncate_after_eos(tokens, eos_id=2, pad_id=9)
    assert out.tolist() == [[2, 9, 9], [5, 5, 5], [5, 2, 9]]
    assert mask.sum(-1).tolist() == [1, 3, 2]
    assert has_eos.tolist() == [True, False, True]


# ---------------------------------------------------------------- advantages


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 99.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    gamma, lam = 0.9, 0.8
    d2 = 1.0 + gamma * 0.0 - 0.3  # value after the last real token is 0
    d1 = 0.0 + gamma * 0.3 - 0.4
    d0 = 0.0 + gamma * 0.4 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    for fn in (gae, gae_loop):
        adv, ret = fn(rewards, values, mask, gamma, lam)
        assert torch.allclose(adv, torch.tensor([[a0, a1, a2, 0.0]]), atol=1e-6), fn.__name__
        assert torch.allclose(ret, torch.tensor([[a0 + 0.5, a1 + 0.4, a2 + 0.3, 0.0]]), atol=1e-6)


@pytest.mark.parametrize("leading", [False, True])
def test_gae_vectorised_matches_loop_on_ragged_masks(leading):
    torch.manual_seed(1)
    batch, steps = 16, 23
    rewards = torch.randn(batch, steps)
    values = torch.randn(batch, steps)
    lengths = torch.randint(0, steps + 1, (batch,))
    starts = torch.randint(0, 5, (batch,)) if leading else torch.zeros(batch, dtype=torch.long)
    pos = torch.arange(steps)
    mask = (pos >= starts[:, None]) & (pos < (starts + lengths)[:, None])
    # Garbage under the padding must not matter.
    rewards[~mask] = float("nan")
    values[~mask] = 1e6
    for gamma, lam in [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0)]:
        adv_loop, ret_loop = gae_loop(rewards, values, mask, gamma, lam)
        adv_vec, ret_vec = gae(rewards, values, mask, gamma, lam)
        assert torch.allclose(adv_vec, adv_loop, atol=1e-4)
        assert torch.allclose(ret_vec, ret_loop, atol=1e-4)
        assert not torch.isnan(adv_vec).any()
        assert torch.count_nonzero(adv_vec[~mask]) == 0


def test_gae_refuses_masks_with_gaps():
    mask = torch.tensor([[1, 0, 1]])
    with pytest.raises(ValueError, match="contiguous"):
        gae(torch.zeros(1, 3), torch.zeros(1, 3), mask, 1.0, 0.95)
    # The loop version handles a gap by ending the episode there.
    adv, _ = gae_loop(torch.tensor([[1.0, 0.0, 2.0]]), torch.zeros(1, 3), mask, 1.0, 1.0)
    assert adv.tolist() == [[1.0, 0.0, 2.0]]


# ---------------------------------------------------------------- KL control and rewards


def test_adaptive_kl_moves_towards_target_and_is_clipped():
    above = AdaptiveKLController(0.1, target=1.0, horizon=10)
    above.update(current_kl=10.0, n_steps=10)  # error 9 clipped to 0.2: 0.1 * (1 + 0.2 * 1)
    assert above.value == pytest.approx(0.12)
    below = AdaptiveKLController(0.1, target=1.0, horizon=10)
    below.update(current_kl=0.9, n_steps=5)  # error -0.1: 0.1 * (1 - 0.1 * 0.5)
    assert below.value == pytest.approx(0.095)
    on_target = AdaptiveKLController(0.1, target=1.0, horizon=10)
    on_target.update(current_kl=1.0, n_steps=5)
    assert on_target.value == pytest.approx(0.1)


def test_adaptive_kl_rejects_bad_target():
    with pytest.raises(InputError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


def test_fixed_kl_never_moves():
    fixed = FixedKLController(0.05)
    fixed.update(current_kl=100.0, n_steps=1000)
    assert fixed.value == 0.05


def test_per_token_kl_rewards_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0, 7.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0, 0.0], [-1.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])
    score = torch.tensor([2.0, 5.0])
    rewards, kl = per_token_kl_rewards(score, logprobs, ref, mask, kl_coef=0.1)
    # kl = logp - ref on response tokens: 0.5, -1.0, 0.0; zero on padding.
    assert torch.allclose(kl[0], torch.tensor([0.5, -1.0, 0.0, 0.0]))
    # -0.1 * kl everywhere, plus the score on the last real token, nothing after it.
    assert torch.allclose(rewards[0], torch.tensor([-0.05, 0.1, 0.0 + 2.0, 0.0]))
    # A row without response tokens gets neither penalty nor score.
    assert torch.count_nonzero(rewards[1]) == 0


# ---------------------------------------------------------------- global batches


def _padding_share(sampler, lengths, steps):
    """Share of computed positions that are padding, over the micro-batches of ``steps``."""
    real = computed = 0
    for step in range(steps):
        for micro in sampler.micro_batches(step, 0):
            real += sum(lengths[i] for i in micro)
            computed += max(lengths[i] for i in micro) * len(micro)
    return 1 - real / computed


@pytest.mark.parametrize("group", [True, False])
def test_global_batches_cover_each_epoch_once_and_repeat_exactly(group):
    from rlhfkit.train.base import GlobalBatchSampler, derive_batches

    lengths = [(i * 37) % 101 + 1 for i in range(203)]  # 203 = 12 batches of 16, 11 left over
    sampler = GlobalBatchSampler(lengths, derive_batches(16, 2, 1), seed=3, group_by_length=group)
    epoch = [i for step in range(12) for i in sampler.global_batch(step)]
    assert len(epoch) == len(set(epoch)) == 12 * 16
    again = GlobalBatchSampler(lengths, derive_batches(16, 2, 1), seed=3, group_by_length=group)
    # resume: a fresh sampler gives the same batch for any step, in any order of asking
    assert [again.global_batch(s) for s in (13, 0, 5)] == [
        sampler.global_batch(s) for s in (13, 0, 5)
    ]
    assert sorted(sampler.global_batch(12)) != sorted(sampler.global_batch(0))  # new epoch order


def test_grouping_by_length_cuts_padding_and_keeps_batches_random():
    import random

    from rlhfkit.train.base import GlobalBatchSampler, derive_batches

    lengths = [random.Random(i).randint(20, 500) for i in range(2000)]
    batches = derive_batches(8, 1, 1)
    grouped = GlobalBatchSampler(lengths, batches, seed=0, group_by_length=True, mega=32)
    uniform = GlobalBatchSampler(lengths, batches, seed=0, group_by_length=False)
    assert _padding_share(grouped, lengths, 200) < 0.1 < 0.3 < _padding_share(uniform, lengths, 200)
    # batches are not simply shortest-first: their mean lengths go up and down through the epoch
    means = [sum(lengths[i] for i in grouped.global_batch(s)) / 8 for s in range(50)]
    assert means != sorted(means) and means != sorted(means, reverse=True)
    # ties keep the random order of the permutation, not the order of the data
    flat = GlobalBatchSampler([5] * 64, batches, seed=1, group_by_length=True)
    assert flat.global_batch(0) != list(range(8))


def test_length_batches_cap_items_and_padded_tokens_and_cover_everything():
    import random

    from rlhfkit.train.base import length_batches

    assert length_batches([5, 300, 7, 290, 6], max_items=4, max_tokens=600) == [[0, 4, 2], [3, 1]]
    lengths = [random.Random(i).randint(1, 512) for i in range(300)]
    batches = length_batches(lengths, max_items=16, max_tokens=2048)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 2048
    assert length_batches([], 4) == []
    assert length_batches([9000], 4, max_tokens=100) == [[0]]  # too long alone: still scored


def test_score_in_shares_scores_every_item_once_in_item_order(monkeypatch):
    """Two processes each score their share (in length order, in chunks); after the gather
    every item's row stands at its own index, and the model is back in training mode."""
    import accelerate.utils

    from rlhfkit.train.base import score_in_shares

    class Accel:
        def __init__(self, index):
            self.process_index, self.num_processes, self.device = index, 2, "cpu"

    lengths = [5, 1, 4, 2, 3, 6, 0]
    model = torch.nn.Linear(1, 1)
    seen: list[list[int]] = []

    def score(idx):
        assert not model.training
        seen.append(idx)
        return torch.tensor([[i, 10.0 * i] for i in idx])

    other: list = []
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda rows: other.extend(rows) or rows)
    score_in_shares(model, len(lengths), lengths.__getitem__, score, Accel(1), chunk=2)
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda rows: rows + other)
    out = score_in_shares(model, len(lengths), lengths.__getitem__, score, Accel(0), chunk=2)
    assert model.training
    assert out.dtype == torch.float32
    assert out.tolist() == [[i, 10.0 * i] for i in range(len(lengths))]
    # process 1 ran first: every other item in length order, two at a time; then process 0
    by_length = sorted(range(len(lengths)), key=lengths.__getitem__)

    def chunks(share):
        return [share[k : k + 2] for k in range(0, len(share), 2)]

    assert seen == chunks(by_length[1::2]) + chunks(by_length[0::2])


@pytest.mark.parametrize("lora", [False, True])
def test_reference_keeps_the_starting_policy_while_the_trained_one_moves(lora):
    """The RL reference answers with the starting weights: a frozen copy, or under LoRA the
    trained model with its adapters disabled."""
    from rlhfkit.models import load_policy
    from rlhfkit.models.packing import Document, pack
    from rlhfkit.train.base import SelectiveLM, TrainConfig, trainable_with_reference

    policy = load_policy("tiny", seed=0)
    batch = pack([Document([5, 6, 7], [[8, 9, 10, 11]]), Document([5], [[12, 13]])], 0)
    start = SelectiveLM(policy.model)(batch).detach()
    lm, reference = trainable_with_reference(policy.model, TrainConfig(lora=lora), "cpu")
    with pytest.raises(RuntimeError, match="bind"):
        reference(batch)
    reference.bind(lm)
    with torch.no_grad():  # what training would do: move every trainable weight
        for p in lm.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    assert not torch.allclose(SelectiveLM(lm)(batch), start, atol=1e-4)
    ref_logits = reference(batch)
    assert not ref_logits.requires_grad
    torch.testing.assert_close(ref_logits, start)
    assert any(p.requires_grad for p in lm.parameters())


def test_evaluate_policy_rescores_only_cut_off_replies_with_an_eos(tmp_path):
    from types import SimpleNamespace

    from rlhfkit.models import load_policy
    from rlhfkit.train.rewards import evaluate_policy

    class Tokens:  # raw score: the number of tokens scored, so an appended EOS adds exactly 1
        normalization: dict = {}

        def raw(self, prompts, texts, ids, attention_mask):
            assert len(prompts) == len(texts) == ids.shape[0]
            return attention_mask.sum(-1).float()

    policy = load_policy("tiny", seed=0)
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": ""}) + "\n" for p in prompts))
    cfg = SimpleNamespace(
        eval_prompts=str(path), eval_samples=6, max_new_tokens=4, max_prompt_length=64
    )
    out = evaluate_policy(policy, Tokens(), cfg, torch.device("cpu"))
    assert not all(out["has_eos"])  # 4 tokens: some replies are cut off
    for score, ended, has_eos in zip(
        out["scores"], out["scores_if_ended"], out["has_eos"], strict=True
    ):
        assert ended == (score if has_eos else score + 1)
