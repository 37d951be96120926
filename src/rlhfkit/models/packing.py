"""Padding-free batches: several sequences packed into one row, each seeing only itself.

Padding a batch to its longest sequence wastes compute on every padded position: on HH pairs,
60 % of the reward trainer's positions were padding. Packing lays the sequences end to end in
as few rows as possible (first-fit decreasing, rows no longer than the longest sequence, so
never more positions than padding), restarts the position ids at each sequence, and passes a
4-D attention mask that is causal within a sequence and blocks everything across sequences.

A packed *document* is a shared prefix followed by one or more continuations; each
continuation sees the prefix and itself, never a sibling. So a prompt shared by a chosen and
a rejected response (reward model, DPO) or by a group of samples (RLOO) is computed once::

    docs = [Document(prompt, [chosen, rejected]) for ...]
    packed = pack(docs, pad_id)
    hidden = body(**packed.model_inputs()).last_hidden_state      # (rows, L, hidden)
    last = packed.gather(hidden, packed.ends)                      # (n_sequences, hidden)
    logits = lm_head(packed.gather(hidden, packed.predict))        # one row per target token

Sequences are numbered document by document, continuation by continuation (document 0's
continuations first). ``predict`` lists, sequence by sequence and in token order, the
positions whose output predicts each continuation token (the token before it, which for the
first continuation token is the prefix's last), with ``targets`` the tokens predicted and
``sequence`` the sequence each belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.errors import InputError


@dataclass
class Document:
    """A shared prefix and the continuations that each follow it (at least one)."""

    prefix: list[int]
    continuations: list[list[int]]

    def __len__(self) -> int:
        return len(self.prefix) + sum(len(c) for c in self.continuations)


@dataclass
class Packed:
    input_ids: torch.Tensor
    """(rows, L) tokens; pad after the last document of a row."""
    position_ids: torch.Tensor
    """(rows, L) position of each token within its own sequence (prefix, then continuation)."""
    attention_mask: torch.Tensor
    """(rows, 1, L, L) bool, true where a query position may attend to a key position."""
    ends: torch.Tensor
    """(n_sequences,) flat index (row * L + column) of each sequence's last token."""
    predict: torch.Tensor
    """(n_targets,) flat index of the position that predicts each continuation token."""
    targets: torch.Tensor
    """(n_targets,) the continuation tokens, in the order of ``predict``."""
    sequence: torch.Tensor
    """(n_targets,) the sequence each target belongs to."""
    n_sequences: int
    real_tokens: int
    """Positions holding a token (the rest of ``rows * L`` is padding)."""

    def model_inputs(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }

    def to(self, device) -> Packed:
        move = lambda t: t.to(device)  # noqa: E731
        return Packed(
            move(self.input_ids),
            move(self.position_ids),
            move(self.attention_mask),
            move(self.ends),
            move(self.predict),
            move(self.targets),
            move(self.sequence),
            self.n_sequences,
            self.real_tokens,
        )

    @staticmethod
    def gather(hidden: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
        """Rows of ``hidden`` ``(rows, L, ...)`` at flat positions -> ``(n, ...)``."""
        return hidden.reshape(-1, *hidden.shape[2:])[flat_index]

    def per_sequence_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum per-target values ``(n_targets,)`` over each sequence -> ``(n_sequences,)``."""
        out = torch.zeros(self.n_sequences, dtype=values.dtype, device=values.device)
        return out.index_add(0, self.sequence, values)


def pack(documents: list[Document], pad_id: int, width: int | None = None) -> Packed:
    """Pack ``documents`` into rows of ``width`` positions (default: the longest document).

    Rows are filled first-fit in order of decreasing length, so a batch of equal lengths packs
    one document a row, like padding, and a batch of mixed lengths into fewer positions."""
    if not documents:
        raise ValueError("pack: no documents")
    lengths = [len(d) for d in documents]
    if any(not d.continuations for d in documents):
        raise ValueError("pack: every document needs at least one continuation")
    width = max(width or 0, max(lengths))
    rows: list[list[int]] = []  # document indices per row
    room: list[int] = []
    for i in sorted(range(len(documents)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    for r in rows:
        r.sort()  # documents in their own order within a row (deterministic, readable)

    n_rows = len(rows)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n_rows, width), dtype=torch.long)
    doc_of = torch.full((n_rows, width), -1, dtype=torch.long)
    branch = torch.zeros((n_rows, width), dtype=torch.long)
    seq_start = [0]
    for d in documents:
        seq_start.append(seq_start[-1] + len(d.continuations))
    ends = [0] * seq_start[-1]
    predict: list[list[int]] = [[] for _ in range(seq_start[-1])]
    targets: list[list[int]] = [[] for _ in range(seq_start[-1])]
    for r, members in enumerate(rows):
        col = 0
        for i in members:
            d = documents[i]
            base = r * width
            p = len(d.prefix)
            if p:
                ids[r, col : col + p] = torch.tensor(d.prefix)
                pos[r, col : col + p] = torch.arange(p)
            doc_of[r, col : col + lengths[i]] = i
            prefix_last = base + col + p - 1 if p else None
            col += p
            for j, cont in enumerate(d.continuations):
                s = seq_start[i] + j
                n = len(cont)
                if n:
                    ids[r, col : col + n] = torch.tensor(cont)
                    pos[r, col : col + n] = torch.arange(p, p + n)
                    branch[r, col : col + n] = j + 1
                ends[s] = base + col + n - 1 if n else prefix_last
                if ends[s] is None:
                    raise ValueError(f"pack: document {i} has an empty prefix and continuation")
                before = [prefix_last] if prefix_last is not None and n else []
                previous = before + list(range(base + col, base + col + n - 1))
                predict[s] = previous
                targets[s] = cont[len(cont) - len(previous) :]
                col += n
    # padding positions: a document of their own each (they see only themselves, no NaN rows)
    pad = doc_of < 0
    doc_of[pad] = -2 - torch.arange(int(pad.sum()))
    same_doc = doc_of.unsqueeze(2) == doc_of.unsqueeze(1)  # (rows, q, k)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    visible = (branch.unsqueeze(1) == 0) | (branch.unsqueeze(2) == branch.unsqueeze(1))
    mask = (same_doc & causal & visible).unsqueeze(1)  # (rows, 1, L, L)
    sequence = [s for s, t in enumerate(targets) for _ in t]
    return Packed(
        ids,
        pos,
        mask,
        torch.tensor(ends, dtype=torch.long),
        torch.tensor([i for p in predict for i in p], dtype=torch.long),
        torch.tensor([t for ts in targets for t in ts], dtype=torch.long),
        torch.tensor(sequence, dtype=torch.long),
        seq_start[-1],
        sum(lengths),
    )


def packed_hidden(body: torch.nn.Module, packed: Packed) -> torch.Tensor:
    """Run a transformer body (``model.model`` of a causal LM or a classifier) over a packed
    batch: ``(rows, L, hidden)``. SDPA takes the boolean mask as it is; other attention
    implementations get the additive form (0 where visible, the dtype's minimum elsewhere)."""
    mask = packed.attention_mask
    config = body.config
    impl = getattr(config, "_attn_implementation", "sdpa")
    if impl not in ("sdpa", "eager", "flex_attention"):
        # flash attention ignores a 4-D mask: it would attend across packed sequences
        raise InputError(
            f"packed batches need sdpa, eager or flex_attention, not {impl!r} "
            "(load the model with attn_implementation='sdpa')"
        )
    window = getattr(config, "sliding_window", None)
    if window and packed.input_ids.shape[1] > window:
        # a ready 4-D mask replaces the model's own, window included
        raise InputError(
            f"packed rows of {packed.input_ids.shape[1]} tokens exceed the model's sliding "
            f"window of {window}: use a --max-length within it"
        )
    if impl != "sdpa":
        dtype = body.get_input_embeddings().weight.dtype
        additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        mask = additive.masked_fill(~mask, torch.finfo(dtype).min)
    return body(
        input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids
    ).last_hidden_state


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Packed:
    """A padded batch (left, right or both) packed: one document per row, its real tokens only.
    Sequence i of the result is row i, so ``ends`` picks each row's last real token."""
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]
    return pack([Document([], [r]) for r in rows], pad_id=0).to(input_ids.device)
