"""The ``rlhfkit`` command. Thin: each command parses its arguments and calls one function.

Commands are grouped by the package that owns them; each group is added by one ``_add_*``
function below so that groups can be read (and changed) independently.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from rlhfkit.errors import InputError

Handler = Callable[[argparse.Namespace], int | None]


def _command(sub, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def _print_json(obj) -> None:
    print(json.dumps(obj, default=str))


# --- models -------------------------------------------------------------------------------------


def _add_model_commands(sub) -> None:
    def generate(args):
        from rlhfkit.models import generate_replies, load_policy

        policy = load_policy(args.model)
        replies = generate_replies(
            policy,
            [[{"role": "user", "content": args.prompt}]],
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
        print(replies[0])

    p = _command(sub, "generate", "Generate a reply from a model to one prompt.", generate)
    p.add_argument("--model", default="default", help="default, tiny, a model directory or hub id")
    p.add_argument("--prompt", required=True, help="the user's message")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest reply in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")


# --- personality --------------------------------------------------------------------------------


def _add_personality_commands(sub) -> None:
    def score(args):
        from rlhfkit.personality import score_file

        rows = score_file(args.attribute, args.input, args.text_field, out=args.out)
        if args.out is None:
            sys.stdout.writelines(json.dumps(row) + "\n" for row in rows)

    p = _command(
        sub,
        "score",
        "Score each record's text on one attribute: one JSON line {ATTRIBUTE: score} per record,"
        " in input order, scores in [0, 1] (for refusal, 0.5 and above means a refusal).",
        score,
    )
    p.add_argument(
        "attribute",
        metavar="ATTRIBUTE",
        help="politeness, hedging, refusal, length, concision, formality, sentiment, sarcasm,"
        " formatting, or rm:PATH#INDEX (a head of a trained reward model)",
    )
    p.add_argument("--input", required=True, help="a .csv (with a header) or .jsonl file")
    p.add_argument("--text-field", required=True, help="the column or field holding the text")
    p.add_argument("--out", default=None, help="write the JSON lines here instead of stdout")


# --- registry -----------------------------------------------------------------------------------

GROUPS = [
    _add_model_commands,
    _add_personality_commands,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlhfkit",
        description="The whole RLHF loop: raters, SFT, reward models, PPO/DPO/KTO, audits.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        code = handler(args)
    except InputError as exc:
        print(f"rlhfkit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
