"""The ``rlhfkit`` command. Thin: each command parses its arguments and calls one function.

Commands are grouped by the package that owns them; each group is added by one ``_add_*``
function below so that groups can be read (and changed) independently.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rlhfkit.errors import InputError

Handler = Callable[[argparse.Namespace], int | None]


def _command(sub, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
    # help is %-formatted (in the parent's command list); a description is shown as it is
    parser = sub.add_parser(name, help=help_text, description=help_text.replace("%%", "%"))
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

    def train_personality(args):
        from rlhfkit.config import config_from_args
        from rlhfkit.personality.training import Config, train_personality

        _print_json({"run": str(train_personality(config_from_args(Config, args)))})

    def compare(args):
        from rlhfkit.personality.compare import compare_runs, format_comparison

        report = compare_runs(
            args.runs,
            args.prompts,
            n_prompts=args.n_prompts,
            max_new_tokens=args.max_new_tokens,
            samples=args.samples,
            temperature=args.temperature,
            replies_per_prompt=args.replies_per_prompt,
            seed=args.seed,
            contrasts=[tuple(c) for c in args.contrast or []],
            replies_out=args.replies_out,
        )
        _print_json(report) if args.json else print(format_comparison(report))

    group = sub.add_parser(
        "personality",
        help="Train personalities from specs and compare their attribute profiles.",
        description="Train personalities from specs and compare their attribute profiles.",
    )
    group.set_defaults(handler=lambda args: group.print_help() or 2)
    personality_sub = group.add_subparsers(dest="personality_command", metavar="COMMAND")
    p = _command(
        personality_sub,
        "train",
        "Build a spec's composite reward and train the policy towards it (PPO, or DPO on pairs"
        " the composite reward ranked); print the run directory as JSON.",
        train_personality,
    )
    if _WANTED is None or "personality" in _WANTED:
        from rlhfkit.config import add_config_arguments
        from rlhfkit.personality.training import Config as PersonalityConfig

        p.add_argument(
            "spec", metavar="SPEC", help="built-in spec name (concise, ...) or a spec YAML file"
        )
        add_config_arguments(p, PersonalityConfig, skip=("spec",))
    p = _command(
        personality_sub,
        "compare",
        "Attribute profile (mean score per attribute, 95%% CI) of each run's replies to the same"
        " held-out prompts, side by side, with sample replies.",
        compare,
    )
    p.add_argument("runs", metavar="RUN", nargs="+", help="run directories or model names")
    p.add_argument("--prompts", required=True, help="held-out prompts: any supported data file")
    p.add_argument("--n-prompts", type=int, default=40, help="how many prompts to answer")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest reply in tokens")
    p.add_argument("--samples", type=int, default=3, help="sample replies shown per run")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0 (the default) decodes greedily; above 0 samples, as training did",
    )
    p.add_argument(
        "--replies-per-prompt",
        type=int,
        default=1,
        help="sampled replies per prompt (needs --temperature above 0); a prompt scores their mean",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every run")
    p.add_argument(
        "--contrast",
        nargs=2,
        type=int,
        action="append",
        metavar=("I", "J"),
        help="also show run I minus run J, paired (0 = the first RUN); repeatable",
    )
    p.add_argument(
        "--replies-out",
        default=None,
        help="write every reply with its scores here, one JSON line each",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")

    def judge(args):
        from rlhfkit.personality.constitution import judge_file

        _print_json(judge_file(args.constitution, args.pairs, args.out, **_labeler_args(args)))

    def revise(args):
        from rlhfkit.personality.constitution import revise_file

        _print_json(revise_file(args.constitution, args.input, args.out, **_labeler_args(args)))

    def _labeler_args(args) -> dict:
        return {
            "labeler": args.labeler,
            "endpoint": args.endpoint,
            "endpoint_model": args.endpoint_model,
            "principles": args.principles,
            "format": args.format,
        }

    for name, help_text, handler, source in (
        (
            "judge",
            "Judge preference pairs against a constitution (AI feedback); write them as TRL"
            " jsonl with rater_id constitution:NAME and per-principle labels.",
            judge,
            "pairs",
        ),
        (
            "revise",
            "Critique and revise replies against a constitution; write the revisions as"
            " demonstrations (TRL prompt/completion jsonl).",
            revise,
            "input",
        ),
    ):
        p = _command(personality_sub, name, help_text, handler)
        p.add_argument(
            "constitution", metavar="CONSTITUTION", help="built-in name or a markdown file"
        )
        p.add_argument(f"--{source}", required=True, help="any supported data file")
        p.add_argument("--out", required=True, help="the .jsonl file to write")
        p.add_argument("--format", default=None, help="input format (detected when omitted)")
        p.add_argument("--labeler", default="default", help="local model: default, tiny, dir")
        p.add_argument("--endpoint", default=None, help="OpenAI-compatible base URL instead")
        p.add_argument("--endpoint-model", default=None, help="the endpoint's model name")
        p.add_argument(
            "--principles", default="sample", help="sample (one per item), all, or one name"
        )


# --- training -----------------------------------------------------------------------------------


def _trainer(sub, name: str, module: str, help_text: str):
    """A command whose flags are the fields of ``rlhfkit.train.<module>.Config``.

    The trainer module (and torch with it) is imported only when the command line names this
    command, so `rlhfkit data validate` and friends start in a fraction of a second.
    """
    import importlib

    from rlhfkit.config import add_config_arguments, config_from_args

    def handler(args):
        mod = importlib.import_module(f"rlhfkit.train.{module}")
        cfg = config_from_args(mod.Config, args)
        out = mod.train(cfg)
        _print_json({"run": str(out)})

    parser = _command(sub, name, help_text, handler)
    if _WANTED is None or name in _WANTED:
        add_config_arguments(parser, importlib.import_module(f"rlhfkit.train.{module}").Config)
    return parser


def _add_train_commands(sub) -> None:
    _trainer(sub, "sft", "sft", "Supervised fine-tuning on demonstrations.")
    _trainer(sub, "ppo", "ppo", "PPO against a reward model with a KL penalty.")

    reward = sub.add_parser("reward", help="Train or evaluate a reward model.")
    reward_sub = reward.add_subparsers(dest="reward_command", metavar="COMMAND")
    _trainer(reward_sub, "train", "reward", "Train a reward model on preference pairs.")

    def reward_eval(args):
        from rlhfkit.train.reward import evaluate

        result = evaluate(args.model, args.data, args.format, args.max_length, args.batch_size)
        if args.json:
            _print_json(result)
        else:
            for key, value in result.items():
                print(f"{key:12s} {value}")

    p = _command(
        reward_sub, "eval", "Accuracy, margin and calibration of a reward model.", reward_eval
    )
    p.add_argument("--model", required=True, help="reward model directory")
    p.add_argument("--data", required=True, help="preference pairs (any supported format)")
    p.add_argument("--format", default=None, help="data format (auto-detected when omitted)")
    p.add_argument("--max-length", type=int, default=512, help="longest sequence in tokens")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass")
    p.add_argument("--json", action="store_true", help="print one JSON object")


# --- data ---------------------------------------------------------------------------------------


def _add_data_commands(sub) -> None:
    def validate(args):
        from rlhfkit.data import validate as validate_file

        _print_json(validate_file(args.path, format=args.format, kind=args.kind))

    def convert(args):
        from rlhfkit.data import convert as convert_file

        _print_json(convert_file(args.path, args.out, format=args.format, kind=args.kind))

    group = sub.add_parser(
        "data",
        help="Check and convert dataset files.",
        description="Check and convert dataset files.",
    )
    group.set_defaults(handler=lambda args: group.print_help() or 2)
    data_sub = group.add_subparsers(dest="data_command", metavar="COMMAND")
    formats = "trl, hh, oasst, pandalm, xstest-prompts, xstest-completions, self-instruct, mt-bench"
    p = _command(
        data_sub,
        "validate",
        "Read and check every record of a data file; print one JSON summary line"
        " (path, format, kind, records, ...). Bad input: PATH:LINE message, exit 2.",
        validate,
    )
    p.add_argument("path", metavar="PATH", help="the data file")
    p.add_argument("--format", default=None, help=f"{formats} (default: detected from content)")
    p.add_argument("--kind", default=None, help="preferences or examples (default: the format's)")
    p = _command(
        data_sub,
        "convert",
        "Convert a data file to TRL conversational JSON lines (written atomically); print a JSON"
        " summary line.",
        convert,
    )
    p.add_argument("path", metavar="PATH", help="the data file")
    p.add_argument("--out", required=True, help="the .jsonl (or .jsonl.gz) file to write")
    p.add_argument("--format", default=None, help=f"{formats} (default: detected from content)")
    p.add_argument("--kind", default=None, help="preferences or examples (default: the format's)")


# --- audit --------------------------------------------------------------------------------------


def _add_audit_commands(sub) -> None:
    def agreement(args):
        from rlhfkit.raters.quality import audit_agreement, format_agreement

        report = audit_agreement(
            args.path,
            args.format,
            margin=args.margin,
            min_overlap=args.min_overlap,
            per_item=args.per_item,
        )
        _print_json(report) if args.json else print(format_agreement(report))

    def bias(args):
        from rlhfkit.raters.bias import audit_bias, format_bias

        report = audit_bias(args.path, args.format, args.scorer, min_judgments=args.min_judgments)
        _print_json(report) if args.json else print(format_bias(report))

    group = sub.add_parser(
        "audit",
        help="Measure the raters: agreement, trust, and what their choices reward.",
        description="Measure the raters: agreement, trust, and what their choices reward.",
    )
    group.set_defaults(handler=lambda args: group.print_help() or 2)
    audit_sub = group.add_subparsers(dest="audit_command", metavar="COMMAND")
    p = _command(
        audit_sub,
        "agreement",
        "Agreement between raters (percent, Cohen's, Fleiss' kappa, Krippendorff's alpha), per"
        " item/rater/label, gold accuracy, Dawid-Skene trust, and raters flagged far below the pool.",
        agreement,
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help="multi-rater labels: PandaLM, XSTest completions"
        " or a CSV/JSONL table with item_id, rater_id, label (and optional gold)",
    )
    p.add_argument(
        "--format",
        default=None,
        help="annotations, pandalm, xstest-completions, or a preference format whose pairs carry"
        " rater_id and item_id (default: detected from content)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--per-item", action="store_true", help="include the per-item table in --json")
    p.add_argument(
        "--margin",
        type=float,
        default=0.15,
        help="flag a rater whose agreement (95%% upper bound) is this far below the"
        " median of the others",
    )
    p.add_argument(
        "--min-overlap",
        type=int,
        default=10,
        help="report Cohen's kappa for rater pairs sharing at least this many items",
    )
    p = _command(
        audit_sub,
        "bias",
        "Bias profile: logistic regression of the choice on attribute differences (length as log"
        " word ratio, optional scorers) with a position intercept and confidence intervals, for"
        " the pool and each rater.",
        bias,
    )
    p.add_argument("path", metavar="PATH", help="judged pairs in a preference format")
    p.add_argument(
        "--format", default=None, help="hh, pandalm, oasst, trl (default: detected from content)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--scorer",
        action="append",
        default=[],
        help="add a personality attribute (refusal, hedging, politeness, ...); repeatable",
    )
    p.add_argument(
        "--min-judgments",
        type=int,
        default=30,
        help="profile raters with at least this many decided judgments",
    )

    def propagation(args):
        from rlhfkit.raters.propagation import audit_propagation, format_propagation

        report = audit_propagation(
            args.runs,
            prompts=args.prompts,
            probes=args.probes,
            attributes=args.attribute or None,
            n_prompts=args.n_prompts,
            samples=args.samples,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            out=args.out,
        )
        _print_json(report) if args.json else print(format_propagation(report))

    p = _command(
        audit_sub,
        "propagation",
        "Follow each attribute's bias through the stages of a run: the raters' choices (bias"
        " profile of the reward run's preference data), the reward model (its preference on probe"
        " pairs that differ in one attribute) and the policy (shift of its replies' attributes"
        " from the reference policy on held-out prompts), with 95%% CIs; table and one plot per"
        " attribute.",
        propagation,
    )
    p.add_argument(
        "runs", metavar="RUN", nargs="+", help="PPO (or other policy) or reward run directories"
    )
    p.add_argument(
        "--prompts",
        default=None,
        help="held-out prompts for the policy stage (default: the run's eval prompts)",
    )
    p.add_argument(
        "--probes", default=None, help="probe set YAML (default: configs/probes/default.yaml)"
    )
    p.add_argument(
        "--attribute",
        action="append",
        default=[],
        help="attribute to follow (length, politeness, hedging, refusal, formatting, ...);"
        " repeatable (default: those five)",
    )
    p.add_argument("--n-prompts", type=int, default=64, help="held-out prompts to answer")
    p.add_argument("--samples", type=int, default=2, help="sampled replies per prompt and policy")
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="longest reply (default: the run's)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument(
        "--out", default=None, help="directory for propagation.json/.txt and one PNG per attribute"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


# --- raters -------------------------------------------------------------------------------------


def _add_raters_commands(sub) -> None:
    def simulate(args):
        import os

        from rlhfkit.raters.personas import load_pool
        from rlhfkit.raters.simulate import simulate_pool

        admin = args.admin_token or os.environ.get("RLHFKIT_ADMIN_TOKEN") or None
        _print_json(
            simulate_pool(
                load_pool(args.pool),
                args.server,
                args.project,
                None if args.rater_token else admin,
                args.max_tasks,
                args.seed,
                rater_tokens=args.rater_token or None,
                time_scale=args.time_scale,
            )
        )

    group = sub.add_parser(
        "raters", help="Simulated rater pools.", description="Simulated rater pools."
    )
    group.set_defaults(handler=lambda args: group.print_help() or 2)
    raters_sub = group.add_subparsers(dest="raters_command", metavar="COMMAND")
    p = _command(
        raters_sub,
        "simulate",
        "Let a simulated rater pool work on a project through the platform's HTTP API (accounts,"
        " login, next task, judgment with labels, strength and time); print a JSON summary.",
        simulate,
    )
    p.add_argument("--pool", required=True, help="pool YAML (see configs/pools/)")
    p.add_argument("--server", required=True, help="platform URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--project", required=True, type=int, help="project id")
    p.add_argument(
        "--admin-token",
        default=None,
        help="admin API token that creates the raters (default: $RLHFKIT_ADMIN_TOKEN)",
    )
    p.add_argument(
        "--rater-token",
        action="append",
        default=[],
        help="use this existing rater's token instead of creating accounts; repeatable",
    )
    p.add_argument("--max-tasks", type=int, default=None, help="stop after N judgments in all")
    p.add_argument("--seed", type=int, default=0, help="seed of the raters' choices")
    p.add_argument(
        "--time-scale",
        type=float,
        default=0.0,
        help="sleep this fraction of each simulated second on task (0: no sleeping)",
    )


# --- beyond PPO ---------------------------------------------------------------------------------


def _add_beyond_ppo_commands(sub) -> None:
    _trainer(sub, "dpo", "dpo", "Direct preference optimisation (DPO or IPO) on preference pairs.")
    _trainer(sub, "kto", "kto", "KTO on unpaired thumbs up/down feedback (or split pairs).")
    _trainer(sub, "rloo", "rloo", "RLOO: k samples per prompt, leave-one-out baseline, KL penalty.")

    def best_of_n(args):
        from rlhfkit.config import config_from_args
        from rlhfkit.train.best_of_n import Config, rejection_sample

        _print_json(rejection_sample(config_from_args(Config, args)))

    p = _command(
        sub,
        "best-of-n",
        "Sample n replies per prompt, keep the reward model's best (demonstrations for"
        " rejection-sampling fine-tuning); print the mean reward of best-of-k, k = 1..n, as JSON.",
        best_of_n,
    )
    if _WANTED is None or "best-of-n" in _WANTED:
        from rlhfkit.config import add_config_arguments
        from rlhfkit.train.best_of_n import Config as BestOfNConfig

        add_config_arguments(p, BestOfNConfig)


# --- platform -----------------------------------------------------------------------------------


def _add_platform_commands(sub) -> None:
    def serve(args):
        from rlhfkit.web.server import serve as run_server

        run_server(host=args.host, port=args.port, workers=args.workers, models=args.models)

    def db_upgrade(args):
        from rlhfkit.store.migrate import upgrade

        _print_json({"revision": upgrade(args.database_url)})

    def create_user(args):
        from rlhfkit.store.migrate import open_store
        from rlhfkit.store.users import create_user as add_user

        uid = add_user(open_store(args.database_url), args.username, args.password, args.role)
        _print_json({"id": uid, "username": args.username, "role": args.role})

    def export(args):
        from rlhfkit.store import export as exports
        from rlhfkit.store.ledger import export_ledger_csv
        from rlhfkit.store.migrate import open_store
        from rlhfkit.store.projects import resolve_project

        engine = open_store(args.database_url)
        pid = resolve_project(engine, args.project) if args.project else None
        if args.what == "ledger":
            n = export_ledger_csv(engine, args.out, project_id=pid, totals=args.totals)
        elif pid is None:
            raise InputError(f"export {args.what}: --project is required")
        elif args.what == "preferences":
            mix = exports.parse_target_mix(args.target_mix) if args.target_mix else None
            n = exports.export_preferences(
                engine, pid, args.out, include_ties=args.include_ties, target_mix=mix
            )
        else:
            n = exports.export_demonstrations(engine, pid, args.out)
        _print_json({"what": args.what, "records": n, "out": args.out})

    db_help = "SQLAlchemy URL (default: RLHFKIT_DATABASE_URL or sqlite:///./rlhfkit.db)"
    p = _command(sub, "serve", "Run the rater platform (migrates the database first).", serve)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (on Linux each on a socket of its own): PostgreSQL gains from one"
        " per core; on SQLite one serves about as much as two (its hot path runs on the event"
        " loop, see docs/platform.md), and two keep serving while one restarts",
    )
    p.add_argument(
        "--models",
        default=None,
        help="models the chat page and /v1 serve, comma-separated: default, tiny, run names"
        " (runs/NAME/model) or model directories (default: RLHFKIT_CHAT_MODELS, else all)",
    )

    group = sub.add_parser("db", help="Platform database.", description="Platform database.")
    group.set_defaults(handler=lambda args: group.print_help() or 2)
    db_sub = group.add_subparsers(dest="db_command", metavar="COMMAND")
    p = _command(db_sub, "upgrade", "Apply the platform's migrations.", db_upgrade)
    p.add_argument("--database-url", default=None, help=db_help)

    group = sub.add_parser("admin", help="Platform accounts.", description="Platform accounts.")
    group.set_defaults(handler=lambda args: group.print_help() or 2)
    admin_sub = group.add_subparsers(dest="admin_command", metavar="COMMAND")
    p = _command(admin_sub, "create-user", "Create an account (e.g. the first admin).", create_user)
    p.add_argument("--username", required=True, help="letters, digits, '.', '-', '_'")
    p.add_argument("--password", required=True, help="at least 8 characters")
    p.add_argument("--role", choices=["admin", "rater"], default="rater", help="account role")
    p.add_argument("--database-url", default=None, help=db_help)

    p = _command(
        sub,
        "export",
        "Export preferences (TRL jsonl with rater ids, labels, group tags), demonstrations"
        " (TRL prompt-completion jsonl) or the pay ledger (CSV).",
        export,
    )
    p.add_argument(
        "what", choices=["preferences", "demonstrations", "ledger"], help="what to export"
    )
    p.add_argument("--project", default=None, help="project id or name (optional for ledger)")
    p.add_argument("--out", required=True, help="file to write (atomically)")
    p.add_argument("--include-ties", action="store_true", help="preferences: keep ties")
    p.add_argument(
        "--target-mix",
        default=None,
        help="preferences: reweight rater groups, e.g. country=IN:0.5,US:0.5 (adds meta.weight)",
    )
    p.add_argument("--totals", action="store_true", help="ledger: totals per rater, not entries")
    p.add_argument("--database-url", default=None, help=db_help)


# --- feedback -----------------------------------------------------------------------------------


def _add_feedback_commands(sub) -> None:
    def export(args):
        from rlhfkit.store.feedback import export_feedback_files
        from rlhfkit.store.migrate import open_store

        engine = open_store(args.database_url)
        _print_json(export_feedback_files(engine, args.out, args.pairs_out, args.model))

    group = sub.add_parser(
        "feedback",
        help="End users' thumbs up / down from the chat page and /v1/feedback.",
        description="End users' thumbs up / down from the chat page and /v1/feedback.",
    )
    group.set_defaults(handler=lambda args: group.print_help() or 2)
    feedback_sub = group.add_subparsers(dest="feedback_command", metavar="COMMAND")
    p = _command(
        feedback_sub,
        "export",
        "Write the ratings as unpaired KTO data (prompt, completion, label) and, with"
        " --pairs-out, preference pairs (prompt, chosen, rejected) where the same prompt got a"
        " liked and a disliked reply; TRL jsonl. Prints the counts as JSON.",
        export,
    )
    p.add_argument("--out", required=True, help="unpaired jsonl to write (atomically)")
    p.add_argument("--pairs-out", default=None, help="preference pairs jsonl to write")
    p.add_argument("--model", default=None, help="only ratings of this model's replies")
    p.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: RLHFKIT_DATABASE_URL or sqlite:///./rlhfkit.db)",
    )


# --- report -------------------------------------------------------------------------------------


def _add_report_commands(sub) -> None:
    def report(args):
        from rlhfkit.report import build_report, write_report

        url = args.database_url
        if url == "" or (url is None and args.project):
            from rlhfkit.settings import get_settings

            url = get_settings().database_url
        data = build_report(args.runs, database_url=url, project=args.project, scorers=args.scorer)
        path = write_report(data, args.out) if args.out or not args.json else None
        _print_json(data.to_dict() if args.json else {"report": str(path), "runs": data.runs})

    p = _command(
        sub,
        "report",
        "Transparency report: one offline HTML page on how a model was trained (base model,"
        " demonstrations, raters, their biases, reward model, personality, curves, refusals,"
        " replies before and after), following the runs' parent links; every number links to"
        " its source.",
        report,
    )
    p.add_argument(
        "runs", metavar="RUN", nargs="+", help="run directories (their parents are found)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="the HTML file to write (default: report.html; with --json, only when given)",
    )
    p.add_argument("--json", action="store_true", help="print the report's data as one JSON object")
    p.add_argument(
        "--database-url",
        nargs="?",
        const="",
        default=None,
        help="read raters, pay and judgments from this store (alone: RLHFKIT_DATABASE_URL);"
        " without it the store is not read",
    )
    p.add_argument("--project", default=None, help="the store's project (id or name)")
    p.add_argument(
        "--scorer",
        action="append",
        default=[],
        help="add a personality attribute to the raters' bias profile; repeatable",
    )


# --- trade-off ----------------------------------------------------------------------------------


def _add_tradeoff_commands(sub) -> None:
    def tradeoff(args):
        from rlhfkit.config import config_from_args
        from rlhfkit.evaluate.tradeoff import Config, format_table, sweep, write_report

        cfg = config_from_args(Config, args)
        report = sweep(cfg)
        paths = write_report(report, cfg.out / "tradeoff")
        print(format_table(report))
        _print_json(paths)

    p = _command(
        sub,
        "tradeoff",
        "Sweep the harmlessness weight and a Lagrangian cost constraint: refusal rate on harmful"
        " (AdvBench) and safe-looking (XSTest) prompts and helpfulness (reward on MT-Bench) per"
        " point; writes OUT/tradeoff.json, .md and the frontier plot .png.",
        tradeoff,
    )
    if _WANTED is None or "tradeoff" in _WANTED:
        from rlhfkit.config import add_config_arguments
        from rlhfkit.evaluate.tradeoff import Config as TradeoffConfig

        add_config_arguments(p, TradeoffConfig)


# --- demo ---------------------------------------------------------------------------------------


def _add_demo_commands(sub) -> None:
    def demo(args):
        from rlhfkit.demo import DemoConfig, run_demo

        values = {k: v for k, v in vars(args).items() if k in DemoConfig.__dataclass_fields__}
        values = {k: v for k, v in values.items() if v is not None}
        summary = run_demo(DemoConfig(**values))
        _print_json(summary)

    p = _command(sub, "demo", "The whole loop on the default model, offline (--fast: tiny).", demo)
    p.add_argument("--fast", action="store_true", help="tiny model, small settings (~1 minute)")
    p.add_argument("--model", default=None, help="policy to start from (default: default)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/demo)")
    p.add_argument("--data-dir", type=Path, default=None, help="human data (../shared/data)")
    p.add_argument("--pool", type=Path, default=None, help="simulated rater pool YAML")
    p.add_argument("--seed", type=int, default=None, help="seed for every stage")


# --- registry -----------------------------------------------------------------------------------

GROUPS = [
    _add_demo_commands,
    _add_model_commands,
    _add_train_commands,
    _add_personality_commands,
    _add_data_commands,
    _add_audit_commands,
    _add_raters_commands,
    _add_beyond_ppo_commands,
    _add_platform_commands,
    _add_feedback_commands,
    _add_report_commands,
    _add_tradeoff_commands,
]


_WANTED: frozenset[str] | None = None
"""Words of the command line being parsed (None: build every command's flags)."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; given ``argv``, heavy commands not named in it skip their flags."""
    global _WANTED
    _WANTED = None if argv is None else frozenset(argv)
    parser = argparse.ArgumentParser(
        prog="rlhfkit",
        description="The whole RLHF loop: raters, SFT, reward models, PPO/DPO/KTO, audits.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
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
