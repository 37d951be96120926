"""Reading run directories (as :mod:`rlhfkit.train.run` writes them) and following their parents.

A run names its parents in ``provenance.json``: every input that was itself a run carries
``parent_run`` (a PPO run's ``policy`` is the SFT run, its ``reward`` the reward-model run), so
the whole chain is found from the last run alone. Bad files raise ``InputError`` with
``PATH:LINE``; missing optional files (``eval.json``, ``metrics.jsonl``) are simply absent.

Example::

    runs, notes = collect_runs(["runs/ppo"])
    [r.kind for r in runs]        # ['ppo', 'sft', 'reward']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhfkit.errors import InputError

RUN_FILES = ("provenance.json", "metrics.jsonl", "config.yaml")
EXTRA_FILES = ("tradeoff.json", "refusal.json", "propagation.json", "gold.json")
"""Optional result files other commands may leave in a run directory; shown when present."""


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (stable in reports)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


@dataclass(eq=False)
class RunDir:
    """One run directory, read and checked."""

    path: Path
    kind: str
    config: dict[str, Any]
    provenance: dict[str, Any]
    metrics: list[dict[str, Any]]
    evaluation: dict[str, Any] | None
    extras: dict[str, Any] = field(default_factory=dict)
    """Parsed optional files (:data:`EXTRA_FILES`) by file name."""

    def source(self, name: str, key: str = "") -> str:
        """The ``PATH#KEY`` source string of ``key`` in this run's file ``name``."""
        return display_path(self.path / name) + (f"#{key}" if key else "")

    @property
    def name(self) -> str:
        return display_path(self.path)

    @property
    def inputs(self) -> dict[str, Any]:
        return self.provenance.get("inputs") or {}


def _json_error(path: Path, exc: json.JSONDecodeError, what: str) -> InputError:
    return InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); expected {what}")


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc, what) from None
    except UnicodeDecodeError:
        raise InputError(f"{path}:1: not UTF-8 text; expected {what}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}:1: expected a JSON object ({what}), got {type(data).__name__}")
    return data


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; a bad line is an error naming its line."""
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{path}:{n}: not valid JSON ({exc.msg}); expected one object per step"
                        ' such as {"step": 1, "train/loss": 0.7}'
                    ) from None
                if not isinstance(row, dict):
                    raise InputError(
                        f"{path}:{n}: expected a JSON object per step, got {type(row).__name__}"
                    )
                rows.append(row)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text; expected JSON lines") from None
    return rows


def read_run(path: str | os.PathLike) -> RunDir:
    """Read one run directory (``runs/NAME`` or its ``model/`` subdirectory)."""
    p = Path(path)
    if p.name == "model" and (p.parent / "provenance.json").is_file():
        p = p.parent
    if not p.is_dir():
        raise InputError(f"{p}: no such run directory; expected runs/NAME written by a trainer")
    if not any((p / name).is_file() for name in RUN_FILES):
        raise InputError(
            f"{p}: not a run directory; expected {', '.join(RUN_FILES)} written by a trainer"
        )
    prov_path = p / "provenance.json"
    provenance = (
        _read_json_object(prov_path, "the provenance object a trainer writes")
        if prov_path.is_file()
        else {}
    )
    if not isinstance(provenance.get("inputs", {}), dict):
        raise InputError(f"{prov_path}: field inputs: expected an object of named inputs")
    for name, entry in provenance.get("inputs", {}).items():
        if not isinstance(entry, dict):
            raise InputError(f"{prov_path}: field inputs.{name}: expected an object")
    config: dict[str, Any] = {}
    cfg_path = p / "config.yaml"
    if cfg_path.is_file():
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            raise InputError(
                f"{cfg_path}:{line}: not valid YAML; expected the run's config"
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"{cfg_path}:1: expected a mapping of config fields")
        config = loaded or {}
    metrics_path = p / "metrics.jsonl"
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else []
    eval_path = p / "eval.json"
    evaluation = (
        _read_json_object(eval_path, "the evaluation object a trainer writes")
        if eval_path.is_file()
        else None
    )
    extras = {
        name: _read_json_object(p / name, f"the {name} result object")
        for name in EXTRA_FILES
        if (p / name).is_file()
    }
    kind = provenance.get("kind")
    return RunDir(
        path=p,
        kind=str(kind) if kind else "unknown",
        config=config,
        provenance=provenance,
        metrics=metrics,
        evaluation=evaluation,
        extras=extras,
    )


def resolve_parent(recorded: str, child: Path) -> Path | None:
    """Where a recorded ``parent_run`` is now.

    Trainers record the path as they were given it, relative to the directory they ran in; the
    report may run elsewhere. Try it as written, then against each directory above the child,
    then as a sibling of the child (a copied ``runs/`` folder).
    """
    rec = Path(recorded)
    candidates = [rec] if rec.is_absolute() else [Path.cwd() / rec]
    if not rec.is_absolute():
        candidates += [base / rec for base in child.resolve().parents]
    candidates.append(child.resolve().parent / rec.name)
    for c in candidates:
        if (c / "provenance.json").is_file():
            return c
    return None


def resolve_input(recorded: str, run: Path) -> Path | None:
    """Where an input file recorded by a run is now (as written, or below a directory above
    the run, the way :func:`resolve_parent` looks)."""
    rec = Path(recorded)
    if rec.is_absolute():
        return rec if rec.is_file() else None
    for base in [Path.cwd(), *run.resolve().parents]:
        if (base / rec).is_file():
            return base / rec
    return None


@dataclass(eq=False)
class Link:
    """``child`` used ``parent`` as its input ``name``."""

    child: RunDir
    name: str
    parent: RunDir


def collect_runs(paths: list[str | os.PathLike]) -> tuple[list[RunDir], list[Link], list[str]]:
    """The named runs and, through ``parent_run`` links, all their ancestors.

    Returns ``(runs, links, notes)``: runs in the order found (named ones first), the parent
    links between them, and a note for each recorded parent that could not be found.
    """
    if not paths:
        raise InputError("report: name at least one run directory")
    runs: list[RunDir] = []
    seen: dict[Path, RunDir] = {}
    links: list[Link] = []
    notes: list[str] = []
    queue = [read_run(p) for p in paths]
    for r in queue:
        seen.setdefault(r.path.resolve(), r)
    while queue:
        run = queue.pop(0)
        if run in runs:
            continue
        runs.append(run)
        for name, entry in run.inputs.items():
            recorded = entry.get("parent_run")
            if not recorded:
                continue
            where = run.source("provenance.json", f"inputs.{name}.parent_run")
            parent_path = resolve_parent(str(recorded), run.path)
            if parent_path is None:
                notes.append(f"parent run {recorded!s} ({where}) was not found")
                continue
            key = parent_path.resolve()
            if key not in seen:
                seen[key] = read_run(parent_path)
                queue.append(seen[key])
            links.append(Link(run, name, seen[key]))
    return runs, links, notes


def lineage(run: RunDir, links: list[Link], names=("policy", "model")) -> list[RunDir]:
    """``run`` and the runs it was fine-tuned from (following the ``policy``/``model`` input)."""
    out = [run]
    while True:
        nxt = next((lk.parent for lk in links if lk.child is out[-1] and lk.name in names), None)
        if nxt is None or nxt in out:
            return out
        out.append(nxt)
