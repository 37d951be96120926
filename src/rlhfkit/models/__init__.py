"""Models: loading (default, tiny, any HF directory or id), scalar heads, batched generation."""

from rlhfkit.models.generation import Generation, generate, generate_replies
from rlhfkit.models.loading import (
    DEFAULT_MODEL,
    Policy,
    default_model_dir,
    load_config,
    load_policy,
    load_tokenizer,
    tiny_policy,
    tiny_tokenizer,
)

__all__ = [
    "DEFAULT_MODEL",
    "Generation",
    "Policy",
    "default_model_dir",
    "generate",
    "generate_replies",
    "load_config",
    "load_policy",
    "load_tokenizer",
    "tiny_policy",
    "tiny_tokenizer",
]
