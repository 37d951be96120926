"""What every trainer shares: the common flags, batch-size arithmetic, Accelerate, LoRA,
optimizer and schedule, and the length-grouped global-batch sampler.

Batch sizes are derived in one place (:func:`derive_batches`): ``--batch-size`` is the global
batch of one optimizer step, split exactly over processes and accumulation steps. Because every
process can see the whole global batch, losses are normalised by the global token (or pair)
count, so one process and two processes give the same gradients.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.train.common import exact_div


@dataclass
class TrainConfig:
    """Flags shared by every trainer."""

    out: Path = Path("runs/run")
    """Run directory to write (config, metrics, TensorBoard, model, provenance, checkpoints)."""
    max_length: int = 512
    """Longest sequence in tokens; prompts are cut from the left so the response is kept."""
    batch_size: int = 8
    """Global batch of one optimizer step (all processes and accumulation steps together)."""
    grad_accum: int = 1
    """Accumulation steps per optimizer step (per process micro-batch = batch/(procs*accum))."""
    lr: float = 1e-5
    """Peak learning rate (linear warm-up, then cosine decay to 10 %)."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    epochs: float = 1.0
    """Passes over the data (fractions allowed)."""
    max_steps: int = 0
    """Optimizer steps to run; overrides --epochs (0 = derive from --epochs)."""
    seed: int = 0
    """Seed for data order, initialisation and sampling."""
    lora: bool = False
    """Train LoRA adapters instead of all weights (the saved model is a PEFT directory)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint."""
    save_every: int = 50
    """Checkpoint every N optimizer steps (0 = only at the end)."""
    log_every: int = 1
    """Print a progress line every N steps."""
    mixed_precision: str = "no"
    """Accelerate mixed precision: no, bf16 or fp16 (bf16 on GPUs)."""
    group_by_length: bool = True
    """Draw each global batch from items of similar length (far less padding); off: uniform."""


@dataclass
class RolloutConfig(TrainConfig):
    """Flags shared by the RL trainers (PPO, RLOO): the policy, its prompts, how rollouts are
    sampled and how they are scored."""

    policy: str = "default"
    """Policy to optimise (usually the SFT model); also the reference."""
    reward: str = ""
    """Reward model directory (written by `rlhfkit reward train`), or a personality spec:
    personality:NAME or SPEC.yaml, with @RM_DIR when the spec weighs head:LABEL terms."""
    prompts: str = ""
    """Prompts: any supported file (its prompts are used; responses ignored)."""
    format: str | None = None
    """Prompts file format (auto-detected when omitted)."""
    max_prompt_length: int = 256
    """Prompts are cut from the left to this many tokens."""
    max_new_tokens: int = 48
    """Longest response in tokens."""
    temperature: float = 0.7
    """Sampling temperature (log-probs are always computed at this temperature too)."""
    missing_eos_penalty: float | None = -1.0
    """Score given to responses that never emit EOS (normalised reward units); none keeps the
    reward model's score."""
    reward_clip: float = 10.0
    """Clip normalised scores to +/- this (0 disables)."""
    normalize_samples: int = 32
    """Normalise the reward so the starting policy's responses score mean 0, std 1, using this
    many samples (0 keeps the reward model's stored normalisation)."""
    eval_prompts: str | None = None
    """Held-out prompts: mean reward (greedy) before and after training."""
    eval_samples: int = 32
    """How many held-out prompts to evaluate."""


@dataclass
class Batches:
    """Derived batch arithmetic (computed once, right after parsing)."""

    global_batch: int
    per_process: int
    micro: int
    grad_accum: int
    world_size: int


def derive_batches(batch_size: int, grad_accum: int, world_size: int) -> Batches:
    per_process = exact_div(batch_size, world_size, "--batch-size over processes")
    micro = exact_div(per_process, grad_accum, "per-process batch over --grad-accum")
    return Batches(batch_size, per_process, micro, grad_accum, world_size)


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    # We feed batches ourselves (see GlobalBatchSampler); Accelerate places tensors, wraps DDP
    # and handles mixed precision and checkpoint state.
    if torch.cuda.is_available():
        # cuDNN attention, SDPA's first choice on Hopper when a mask is passed, builds a plan for
        # every new shape (dynamic padding: nearly every micro-batch) and its backward returns
        # NaN for left-padded rows at some lengths (pytorch/pytorch#196678); the
        # memory-efficient kernel takes the same masks without either problem
        # (benchmarks/sdpa_backends.py measures both).
        torch.backends.cuda.enable_cudnn_sdp(False)
    # cpu=True when there is no GPU: only then does Accelerate set up gloo under torchrun
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.mixed_precision,
        dataloader_config=DataLoaderConfiguration(split_batches=False),
    )


def total_steps(n_items: int, cfg: TrainConfig) -> int:
    """Optimizer steps: --max-steps when given (it overrides --epochs), else from the epochs."""
    if cfg.max_steps:
        return cfg.max_steps
    return max(math.floor(n_items * cfg.epochs / cfg.batch_size), 1)


class GlobalBatchSampler:
    """Deterministic global batches: a fresh permutation per epoch (seeded), batches drawn in
    order, so the data position is just the step number and resume needs nothing else.

    With ``group_by_length`` each run of ``mega`` consecutive global batches of the permutation
    is sorted by length and cut again, and the resulting batches are shuffled (seeded): a global
    batch then holds items of similar length, so micro-batches carry little padding even with
    one micro-batch per step (the mega-batch trick of HF's LengthGroupedSampler). Within a
    global batch, items are always sorted by length before being cut into micro-batches.
    """

    def __init__(
        self,
        lengths: list[int],
        batches: Batches,
        seed: int,
        group_by_length: bool = True,
        mega: int = 32,
    ):
        if len(lengths) < batches.global_batch:
            from rlhfkit.errors import InputError

            raise InputError(
                f"--batch-size {batches.global_batch} is larger than the data ({len(lengths)} items)"
            )
        self.lengths = lengths
        self.b = batches
        self.seed = seed
        self.group = group_by_length
        self.mega = mega
        self.per_epoch = len(lengths) // batches.global_batch
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _batches_of_epoch(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = random.Random(self.seed * 100_003 + epoch)
            order = list(range(len(self.lengths)))
            rng.shuffle(order)
            size = self.b.global_batch
            order = order[: self.per_epoch * size]  # the remainder waits for another epoch
            if self.group:
                span = self.mega * size
                grouped: list[int] = []
                for start in range(0, len(order), span):
                    # stable sort: ties keep their random order
                    grouped += sorted(order[start : start + span], key=self.lengths.__getitem__)
                order = grouped
            batches = [order[i : i + size] for i in range(0, len(order), size)]
            if self.group:
                rng.shuffle(batches)  # long and short batches interleave through the epoch
            self._epoch = (epoch, batches)
        return self._epoch[1]

    def global_batch(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.per_epoch)
        return list(self._batches_of_epoch(epoch)[index])

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The micro-batches this process runs at ``step`` (``grad_accum`` of them)."""
        items = sorted(self.global_batch(step), key=lambda i: (self.lengths[i], i))
        n_micro = self.b.world_size * self.b.grad_accum
        chunks = [items[j * self.b.micro : (j + 1) * self.b.micro] for j in range(n_micro)]
        return [chunks[j] for j in range(rank, n_micro, self.b.world_size)]


def length_batches(lengths: list[int], max_items: int, max_tokens: int = 4096) -> list[list[int]]:
    """Indices sorted by length and cut into batches of at most ``max_items`` whose padded
    size (items x longest) stays within ``max_tokens``: for inference passes, where the order
    does not matter and padding is pure waste.

    >>> length_batches([5, 300, 7, 290, 6], max_items=4, max_tokens=600)
    [[0, 4, 2], [3, 1]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        last = batches[-1] if batches else []
        if batches and len(last) < max_items and (len(last) + 1) * lengths[i] <= max_tokens:
            last.append(i)
            continue
        batches.append([i])
    return batches


def apply_lora(model, cfg: TrainConfig, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type=task_type,
    )
    return get_peft_model(model, lora)


def make_optimizer(model, cfg: TrainConfig, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))

    def schedule(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def freeze_bottom(model: torch.nn.Module, n_layers: int, flag: str = "--freeze-layers") -> int:
    """Freeze the token embeddings and the first ``n_layers`` transformer blocks.

    No gradient then flows below the first trainable block, so backward costs only the top of
    the network; with small preference sets the frozen features also overfit less. Returns the
    number of parameters left trainable.
    """
    if n_layers <= 0:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = inner.base_model
    layers = getattr(body, "layers", None)
    if layers is None or n_layers > len(layers):
        from rlhfkit.errors import InputError

        total = "no" if layers is None else len(layers)
        raise InputError(f"{flag} {n_layers}: the model has {total} transformer layers")
    for module in [body.get_input_embeddings(), *layers[:n_layers]]:
        for p in module.parameters():
            p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def disable_dropout(model: torch.nn.Module) -> None:
    """Checklist point 4: dropout off everywhere, in train mode too."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for cfg in [getattr(model, "config", None)]:
        if cfg is None:
            continue
        for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop"):
            if hasattr(cfg, name):
                setattr(cfg, name, 0.0)


class SelectiveLM(torch.nn.Module):
    """A causal LM whose forward returns logits only at selected positions.

    ``forward(input_ids, attention_mask, select)`` with ``select`` a bool ``(batch, seq)`` mask
    returns ``(n_selected, vocab)``. ``forward(packed)`` with a
    :class:`~rlhfkit.models.packing.Packed` batch returns the logits at ``packed.predict``
    (one row per continuation token, no padding computed). The decoder runs once; the
    vocabulary projection runs only where needed (prompt positions cost nothing on a 49k
    vocabulary). Being a module, it is what Accelerate wraps for DDP, so gradients synchronise
    through a normal forward call.
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask=None, select=None):
        from rlhfkit.models.packing import Packed, packed_hidden
        from rlhfkit.train.common import position_ids_from_attention_mask

        if isinstance(input_ids, Packed):
            packed = input_ids
            hidden = packed_hidden(self.lm.get_decoder(), packed)  # (rows, L, hidden)
            return self.lm.get_output_embeddings()(packed.gather(hidden, packed.predict))
        hidden = self.lm.get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_attention_mask(attention_mask),
        ).last_hidden_state  # (batch, seq, hidden)
        return self.lm.get_output_embeddings()(hidden[select])  # (n_selected, vocab)


class Reference:
    """The reference policy of an RL run: a frozen copy of the starting weights, or, under
    LoRA, the trained model itself with its adapters disabled (no second copy in memory).

    Example::

        lm, reference = trainable_with_reference(policy.model, cfg, device)
        ...                                   # wrap lm, accelerator.prepare, unwrap
        reference.bind(inner_lm)              # the trained model, unwrapped
        ref_logits = reference(packed_batch)  # no gradient
    """

    def __init__(self, frozen: torch.nn.Module | None):
        self.frozen = frozen
        self._lm: SelectiveLM | None = None
        self._ctx: Callable = contextlib.nullcontext

    def bind(self, trained_lm: torch.nn.Module) -> None:
        """Name the trained model (after ``accelerator.prepare``, unwrapped)."""
        self._lm = SelectiveLM(self.frozen if self.frozen is not None else trained_lm)
        if self.frozen is None:
            self._ctx = trained_lm.disable_adapter

    @torch.no_grad()
    def __call__(self, batch, **kwargs) -> torch.Tensor:
        if self._lm is None:
            raise RuntimeError("Reference.bind(trained_lm) first")
        with self._ctx():
            return self._lm(batch, **kwargs)


def trainable_with_reference(lm: torch.nn.Module, cfg: TrainConfig, device):
    """``(trainable, reference)``: ``lm`` without dropout (LoRA-wrapped under ``--lora``) and
    its :class:`Reference`, a frozen copy of the starting weights unless under LoRA."""
    disable_dropout(lm)
    if cfg.lora:
        return apply_lora(lm, cfg), Reference(None)
    frozen = copy.deepcopy(lm).eval().to(device)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return lm, Reference(frozen)


def unwrap(accelerator, model):
    return accelerator.unwrap_model(model)


def read_prompts(path: str, fmt: str | None = None) -> list[list[dict]]:
    """Unique prompts (conversations) from any supported file, in first-seen order."""
    from pathlib import Path

    from rlhfkit.data import read_examples, read_preferences
    from rlhfkit.data.formats import PREFERENCES, default_kind, detect_format
    from rlhfkit.errors import InputError

    fmt = fmt or detect_format(Path(path))
    kind = default_kind(Path(path), fmt)
    records = read_preferences(path, fmt) if kind == PREFERENCES else read_examples(path, fmt)
    seen, prompts = set(), []
    for r in records:
        key = repr(r.prompt)
        if key not in seen:
            seen.add(key)
            prompts.append(r.prompt)
    if not prompts:
        raise InputError(f"{path}: no prompts found")
    return prompts


# ---------------------------------------------------------------- rollouts against a reward model


def frozen_reward_model(reward: str, policy_tokenizer, device):
    """``(scorer, rm)``: the reward model at ``reward`` frozen on ``device`` as a
    :class:`~rlhfkit.models.heads.RewardModel` (raw scores, ``(b, heads)``), and the loaded
    :class:`~rlhfkit.models.heads.ScalarModel` (its config carries the normalisation)."""
    from rlhfkit.errors import InputError
    from rlhfkit.models.heads import RewardModel, load_reward_model

    rm = load_reward_model(reward)
    if rm.tokenizer.get_vocab() != policy_tokenizer.get_vocab():
        raise InputError(f"--reward {reward}: its tokenizer differs from the policy's")
    scorer = RewardModel(rm.model).to(device).eval()
    for p in scorer.parameters():
        p.requires_grad_(False)
    return scorer, rm


@torch.no_grad()
def raw_scores(reward_model, gen, device) -> torch.Tensor:
    """Head-0 raw scores ``(b,)`` of a :class:`~rlhfkit.models.Generation` (prompt + reply)."""
    from rlhfkit.models.packing import pack_rows

    return reward_model(pack_rows(*gen.rows(device)))[:, 0]  # (b,), no padding computed


@torch.no_grad()
def score_in_shares(
    model,
    n: int,
    length: Callable[[int], int],
    score: Callable[[list[int]], torch.Tensor],
    accelerator,
    chunk: int,
) -> torch.Tensor:
    """``score(indices)`` (a tensor with one row per index) for items ``0..n-1`` in eval mode,
    each process scoring a share of them in length order (so chunks pad little), gathered so
    every process holds all ``n`` rows, in item order. Reference passes (DPO, KTO) use it."""
    from accelerate.utils import gather_object

    was = model.training
    model.eval()
    order = sorted(range(n), key=length)
    mine = order[accelerator.process_index :: accelerator.num_processes]
    rows: list[tuple[int, list[float] | float]] = []
    for start in range(0, len(mine), chunk):
        idx = mine[start : start + chunk]
        rows.extend(zip(idx, score(idx).double().tolist(), strict=True))
    model.train(was)
    if accelerator.num_processes > 1:
        rows = gather_object(rows)
    return torch.tensor(
        [v for _, v in sorted(rows, key=lambda r: r[0])], dtype=torch.float64
    ).float()


def prepare(accelerator, model, optimizer, scheduler):
    """Wrap model and optimizer for the processes; keep the scheduler our own.

    Accelerate's scheduler wrapper steps once per process (it assumes each process consumed its
    own batch); our ``--batch-size`` is already global, so that would decay the learning rate
    N times too fast on N processes. The scheduler is registered for checkpointing instead.
    """
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return model, optimizer, scheduler
