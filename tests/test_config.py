"""Dataclass configs as command lines: docstrings are help, YAML loads, flags override."""

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlhfkit.config import ConfigError, add_config_arguments, config_from_args, field_docs


@dataclass
class Example:
    lr: float = 1e-5
    """Peak learning rate."""
    steps: int = 10
    """How many steps."""
    lora: bool = False
    """Train adapters."""
    heads: list[str] | None = None
    """Extra heads."""
    out: Path = Path("runs/x")
    """Where to write."""


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    return config_from_args(Example, parser.parse_args(argv)), parser


def test_field_docstrings_are_the_help():
    assert field_docs(Example)["lr"] == "Peak learning rate."
    _, parser = parse([])
    assert "Peak learning rate. (default: 1e-05)" in parser.format_help().replace(
        "\n", " "
    ).replace("  ", " ")


def test_flags_convert_types():
    cfg, _ = parse(["--lr", "3e-4", "--steps", "5", "--lora", "--heads", "a,b", "--out", "o"])
    assert cfg == Example(lr=3e-4, steps=5, lora=True, heads=["a", "b"], out=Path("o"))


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nsteps: 7\n")
    cfg, _ = parse(["--config", str(path), "--steps", "9"])
    assert cfg.lr == 0.01 and cfg.steps == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: [1, 2\n", "c.yaml:"),  # not YAML
        ("- 1\n- 2\n", "expected a mapping"),
        ("learning_rate: 1\n", "unknown field 'learning_rate'"),
        ("steps: 1.5\n", "field steps"),
        ("lora: maybe\n", "field lora"),
        ("lr: yes-please\n", "field lr"),
    ],
)
def test_bad_yaml_names_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse(["--config", str(path)])


def test_bad_flag_value_names_the_field():
    with pytest.raises(ConfigError, match="field steps"):
        parse(["--steps", "many"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        parse(["--config", str(tmp_path / "none.yaml")])
