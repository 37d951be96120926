import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhfkit.errors import InputError
from rlhfkit.models import default_model_dir, generate, load_policy, tiny_policy
from rlhfkit.models.chat import encode_prompt, encode_response, left_pad, right_pad
from rlhfkit.models.heads import RewardModel, load_reward_model, normalize, set_normalization
from rlhfkit.models.packing import Document, pack

CHAT = [{"role": "user", "content": "Say hello."}]


def test_tiny_tokenizer_pad_is_distinct_from_eos():
    tok = tiny_policy().tokenizer
    assert tok.pad_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"


def test_response_encoding_keeps_eos():
    tok = tiny_policy().tokenizer
    ids = encode_response(tok, "hi")
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[:-1]) == "hi"


def test_chat_template_ends_with_assistant_header():
    tok = tiny_policy().tokenizer
    text = tok.decode(encode_prompt(tok, CHAT))
    assert text.endswith("<|im_start|>assistant\n")
    assert "Say hello." in text


def test_tiny_policy_is_deterministic_per_seed():
    a, b, c = tiny_policy(seed=1), tiny_policy(seed=1), tiny_policy(seed=2)
    wa = a.model.model.embed_tokens.weight
    assert torch.equal(wa, b.model.model.embed_tokens.weight)
    assert not torch.equal(wa, c.model.model.embed_tokens.weight)


def test_batched_greedy_generation_equals_one_at_a_time():
    policy = tiny_policy()
    prompts = [CHAT, [{"role": "user", "content": "A much longer question about many things?"}]]
    batched = generate(policy, prompts, max_new_tokens=12, temperature=0.0)
    for i, p in enumerate(prompts):
        single = generate(policy, [p], max_new_tokens=12, temperature=0.0)
        n = int(single.response_mask.sum())
        assert batched.response_ids[i, :n].tolist() == single.response_ids[0, :n].tolist()


def test_several_batches_are_length_sorted_and_returned_in_the_order_given(capsys):
    policy = tiny_policy()
    prompts = [[{"role": "user", "content": "x" * n}] for n in (30, 3, 17, 50, 8, 1, 25)]
    gen = generate(policy, prompts, max_new_tokens=10, temperature=0.0, batch_size=2, progress=True)
    for i, p in enumerate(prompts):
        assert gen.prompt_ids[i][gen.prompt_mask[i].bool()].tolist() == encode_prompt(
            policy.tokenizer, p
        )
        single = generate(policy, [p], max_new_tokens=10, temperature=0.0)
        assert gen.texts[i] == single.texts[0]
        assert torch.equal(
            gen.response_ids[i][gen.response_mask[i]],
            single.response_ids[0][single.response_mask[0]],
        )
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        f"[generate] {n}/7 replies" for n in (2, 4, 6, 7)
    ]


def test_generation_masks_everything_after_first_eos():
    policy = tiny_policy()
    gen = generate(policy, [CHAT] * 4, max_new_tokens=20, temperature=1.5, seed=3)
    eos = policy.tokenizer.eos_token_id
    for row, mask, has in zip(gen.response_ids, gen.response_mask, gen.has_eos, strict=True):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        assert (row[n:] == policy.tokenizer.pad_token_id).all()
        assert bool(has) == (row[n - 1].item() == eos)
        assert eos not in row[: n - 1].tolist()


def test_ended_rows_append_eos_only_to_replies_that_were_cut_off():
    from rlhfkit.models.generation import Generation

    pad, eos = 0, 9
    gen = Generation(
        prompt_ids=torch.tensor([[pad, 5, 6], [pad, pad, 6], [4, 5, 6]]),
        prompt_mask=torch.tensor([[0, 1, 1], [0, 0, 1], [1, 1, 1]]),
        response_ids=torch.tensor([[7, eos, pad, pad], [7, 8, 7, 8], [8, 8, 8, 8]]),
        response_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]).bool(),
        has_eos=torch.tensor([True, False, False]),
        texts=["a", "b", "c"],
    )
    ids, attn = gen.ended_rows(eos)
    plain_ids, plain_attn = gen.rows()
    assert ids.shape == attn.shape == (3, 8)
    # the reply that ended is untouched (one padding column more)
    assert ids[0].tolist() == [*plain_ids[0].tolist(), 0]
    assert attn[0].tolist() == [*plain_attn[0].tolist(), 0]
    # each cut-off reply gets its EOS right after its last token, left padding or not
    assert ids[1].tolist() == [pad, pad, 6, 7, 8, 7, 8, eos]
    assert attn[1].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert ids[2].tolist() == [4, 5, 6, 8, 8, 8, 8, eos] and attn[2].tolist() == [1] * 8


def test_seeded_sampling_is_reproducible():
    policy = tiny_policy()
    a = generate(policy, [CHAT] * 2, max_new_tokens=10, temperature=1.0, seed=5)
    b = generate(policy, [CHAT] * 2, max_new_tokens=10, temperature=1.0, seed=5)
    assert torch.equal(a.response_ids, b.response_ids)


def test_reward_score_does_not_depend_on_padding_side():
    rm = load_reward_model("tiny", heads=["preference", "helpful"])
    scorer = RewardModel(rm.model)
    tok = rm.tokenizer
    seqs = [encode_prompt(tok, CHAT) + encode_response(tok, "hi"), encode_prompt(tok, CHAT)]
    with torch.no_grad():
        left = scorer(*left_pad(seqs, tok.pad_token_id))
        right = scorer(*right_pad(seqs, tok.pad_token_id))
        alone = scorer(*right_pad(seqs[1:], tok.pad_token_id))
    assert left.shape == (2, 2)
    torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(left[1:], alone, rtol=1e-4, atol=1e-5)


def test_normalization_round_trip():
    rm = load_reward_model("tiny")
    scores = torch.tensor([[1.0], [3.0], [5.0]])
    set_normalization(rm.model.config, scores)
    out = normalize(scores, rm.model.config)
    assert abs(out.mean().item()) < 1e-6
    assert abs(out.std().item() - 1.0) < 1e-5


def test_saved_reward_model_loads_with_auto_class(tmp_path):
    rm = load_reward_model("tiny", heads=["preference", "harmless"])
    set_normalization(rm.model.config, torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    rm.model.save_pretrained(tmp_path)
    rm.tokenizer.save_pretrained(tmp_path)
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert auto.config.num_labels == 2
    again = load_reward_model(tmp_path)
    assert again.heads == ["preference", "harmless"]
    assert again.model.config.rlhfkit_reward["offset"] == [1.0, 2.0]


def test_saved_tiny_policy_loads_by_path(tmp_path):
    policy = tiny_policy()
    policy.model.save_pretrained(tmp_path)
    policy.tokenizer.save_pretrained(tmp_path)
    again = load_policy(tmp_path)
    assert again.tokenizer.pad_token_id == policy.tokenizer.pad_token_id
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), type(policy.model))


@pytest.mark.parametrize("bad", ["/no/such/model/dir", "not-a-real-org/not-a-real-model-xyz"])
def test_unknown_model_is_a_clear_error(bad, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="cannot load"):
        load_policy(bad)


def test_garbage_model_directory_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load"):
        load_policy(tmp_path)


@pytest.mark.slow
def test_default_model_converts_once_then_loads_and_replies():
    path = default_model_dir()
    assert (path / "model.safetensors").exists()
    meta = json.loads((path / "rlhfkit.json").read_text())
    assert "gguf" in meta["converted_from"]
    policy = load_policy("default")
    assert not getattr(policy.model, "is_quantized", False)
    tok = policy.tokenizer
    assert tok.pad_token_id != tok.eos_token_id
    reply = generate(
        policy,
        [[{"role": "user", "content": "What is the capital of France?"}]],
        max_new_tokens=24,
        temperature=0.0,
    ).texts[0]
    assert "Paris" in reply
    # trainable: a gradient flows (a quantised GGUF model would refuse)
    ids = torch.tensor([encode_prompt(tok, CHAT)])
    policy.model.train()
    policy.model(input_ids=ids, labels=ids).loss.backward()
    assert policy.model.model.embed_tokens.weight.grad is not None


def test_shared_prefix_scores_equal_full_sequences_with_gradients():
    rm = load_reward_model("tiny", heads=["a", "b"])
    tok = rm.tokenizer
    scorer = RewardModel(rm.model)
    prompts = [encode_prompt(tok, CHAT), encode_prompt(tok, [{"role": "user", "content": "x"}])]
    replies = [encode_response(tok, t) for t in ("good answer", "bad", "fine", "a longer reply")]
    full = scorer(*right_pad([prompts[i // 2] + replies[i] for i in range(4)], tok.pad_token_id))
    docs = [Document(prompts[0], replies[:2]), Document(prompts[1], replies[2:])]
    shared = scorer(pack(docs, tok.pad_token_id))  # both replies follow one copy of the prompt
    torch.testing.assert_close(full, shared, rtol=1e-4, atol=1e-5)
    grads = []
    for scores in (full, shared):
        rm.model.zero_grad()
        scores.sum().backward(retain_graph=True)
        grads.append(rm.model.model.embed_tokens.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)
