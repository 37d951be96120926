"""Projects, their members and their items (imported from any supported data file).

Example::

    pid = create_project(engine, ProjectSettings(name="hh-round-1", overlap_k=3))
    add_items(engine, pid, [{"prompt": "Hi", "response_a": "Hello!", "response_b": "What?"}])
    import_items_file(engine, pid, "pairs.jsonl")          # via rlhfkit.data readers
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from rlhfkit.errors import InputError
from rlhfkit.store import limits
from rlhfkit.store.engine import reading, writing
from rlhfkit.store.errors import Conflict, NotFound
from rlhfkit.store.schema import CHOICES, TASK_TYPES, items, judgments, project_members, projects
from rlhfkit.store.users import now_utc

DEFAULT_LABELS = ["helpful", "harmful", "evasive", "polite", "honest", "verbose"]


@dataclass
class ProjectSettings:
    """What an admin sets when creating a project."""

    name: str
    """Unique project name."""
    instructions: str = "Read the conversation, then choose the better reply."
    """Shown to raters above every task."""
    label_set: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    """Labels a rater may tick for each response."""
    overlap_k: int = 3
    """Judgments per ordinary item, each from a different rater."""
    gold_share: float = 0.1
    """Chance that a rater's next task is a gold item (known answer) when one is left for them."""
    pay_per_comparison_cents: int = 10
    """Pay for one comparison, in cents."""
    pay_per_demonstration_cents: int = 50
    """Pay for one written demonstration, in cents."""
    min_hourly_wage_cents: int = 1500
    """Effective hourly pay below this is flagged."""
    assignment_ttl_s: int = 1800
    """An unanswered task goes back to the queue after this many seconds."""

    def validated(self) -> ProjectSettings:
        limits.text(self.name, "name", limits.NAME)
        limits.text(self.instructions, "instructions", limits.INSTRUCTIONS)
        labels = limits.label_set(self.label_set)
        checks = [
            ("overlap_k", self.overlap_k, 1, 100),
            ("gold_share", self.gold_share, 0, 1),
            ("pay_per_comparison_cents", self.pay_per_comparison_cents, 0, 1_000_000),
            ("pay_per_demonstration_cents", self.pay_per_demonstration_cents, 0, 1_000_000),
            ("min_hourly_wage_cents", self.min_hourly_wage_cents, 0, 1_000_000),
            ("assignment_ttl_s", self.assignment_ttl_s, 1, 7 * 86400),
        ]
        for name, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"{name}: expected a number, got {value!r}")
            if not lo <= value <= hi or value != value:
                raise InputError(f"{name}: expected a value from {lo} to {hi}, got {value}")
            if name != "gold_share" and value != int(value):
                raise InputError(f"{name}: expected a whole number, got {value}")
        return ProjectSettings(**{**asdict(self), "name": self.name.strip(), "label_set": labels})


def create_project(engine: Engine, settings: ProjectSettings) -> int:
    """Create a project; returns its id."""
    s = settings.validated()
    try:
        with writing(engine) as conn:
            return conn.execute(
                insert(projects).values(**asdict(s), created_at=now_utc()).returning(projects.c.id)
            ).scalar_one()
    except IntegrityError:
        raise Conflict(f"project name {s.name!r} is taken") from None


def get_project(engine: Engine, project_id: int) -> dict[str, Any]:
    with reading(engine) as conn:
        row = conn.execute(select(projects).where(projects.c.id == project_id)).mappings().first()
    if row is None:
        raise NotFound(f"project {project_id}: no such project")
    return dict(row)


def resolve_project(engine: Engine, ref: str | int) -> int:
    """A project's id from its id or its name (as typed on the command line)."""
    with reading(engine) as conn:
        if isinstance(ref, int) or str(ref).isdigit():
            row = conn.execute(select(projects.c.id).where(projects.c.id == int(ref))).first()
        else:
            row = conn.execute(select(projects.c.id).where(projects.c.name == str(ref))).first()
    if row is None:
        raise NotFound(f"project {ref!r}: no project with that id or name")
    return row.id


def list_projects(engine: Engine, member_id: int | None = None) -> list[dict[str, Any]]:
    """All projects, or those ``member_id`` was invited to."""
    query = select(projects).order_by(projects.c.id)
    if member_id is not None:
        query = query.join(project_members, project_members.c.project_id == projects.c.id).where(
            project_members.c.user_id == member_id
        )
    with reading(engine) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def add_member(engine: Engine, project_id: int, user_id: int) -> None:
    """Invite a rater to a project (inviting twice is harmless)."""
    get_project(engine, project_id)
    with writing(engine) as conn:
        present = conn.execute(
            select(project_members).where(
                project_members.c.project_id == project_id, project_members.c.user_id == user_id
            )
        ).first()
        if present is None:
            try:
                conn.execute(insert(project_members).values(project_id=project_id, user_id=user_id))
            except IntegrityError:
                raise NotFound(f"user {user_id}: no such user") from None


def is_member(engine: Engine, project_id: int, user_id: int) -> bool:
    with reading(engine) as conn:
        return (
            conn.execute(
                select(project_members.c.user_id).where(
                    project_members.c.project_id == project_id,
                    project_members.c.user_id == user_id,
                )
            ).first()
            is not None
        )


def members(engine: Engine, project_id: int) -> list[int]:
    with reading(engine) as conn:
        return list(
            conn.execute(
                select(project_members.c.user_id).where(project_members.c.project_id == project_id)
            ).scalars()
        )


def _item_row(raw: Any, where: str) -> dict[str, Any]:
    """Validate one item as given to :func:`add_items`."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected an object with prompt, response_a, response_b")
    known = {"prompt", "response_a", "response_b", "gold", "task_type", "source"}
    unknown = set(raw) - known
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    task_type = raw.get("task_type", "comparison")
    if task_type not in TASK_TYPES:
        raise InputError(f"{where}.task_type: expected one of {', '.join(TASK_TYPES)}")
    row: dict[str, Any] = {
        "task_type": task_type,
        "prompt": limits.messages(raw.get("prompt"), f"{where}.prompt"),
        "source": limits.text(raw.get("source"), f"{where}.source", limits.SOURCE, required=False),
        "response_a": None,
        "response_b": None,
        "gold_answer": None,
    }
    if task_type == "comparison":
        row["response_a"] = limits.text(
            raw.get("response_a"), f"{where}.response_a", limits.RESPONSE, allow_empty=True
        )
        row["response_b"] = limits.text(
            raw.get("response_b"), f"{where}.response_b", limits.RESPONSE, allow_empty=True
        )
        gold = raw.get("gold")
        if gold is not None and gold not in CHOICES:
            raise InputError(f"{where}.gold: expected one of {', '.join(CHOICES)} or null")
        row["gold_answer"] = gold
    elif raw.get("response_a") or raw.get("response_b") or raw.get("gold"):
        raise InputError(f"{where}: a demonstration item has only a prompt")
    row["is_gold"] = row["gold_answer"] is not None
    return row


def add_items(engine: Engine, project_id: int, raw_items: list[Any], source: str = "items") -> int:
    """Add items (all or none). Each is ``{"prompt", "response_a", "response_b", "gold"?,
    "task_type"?}``; ``prompt`` is text or a list of messages. Returns how many were added."""
    if not isinstance(raw_items, list):
        raise InputError(f"{source}: expected a list of items")
    rows = [_item_row(raw, f"{source}[{i}]") for i, raw in enumerate(raw_items)]
    get_project(engine, project_id)
    created = now_utc()
    for row in rows:
        row.update(project_id=project_id, n_active=0, n_done=0, full=False, created_at=created)
    if rows:
        with writing(engine) as conn:
            conn.execute(insert(items), rows)
    return len(rows)


def import_items_file(
    engine: Engine, project_id: int, path: str | Path, task_type: str = "comparison"
) -> int:
    """Import items from a data file.

    Comparison items come from any preference format ``rlhfkit.data.read_preferences`` reads
    (the pair's two responses become A and B; the platform shows them in random order) or from
    a jsonl of this module's own item objects. Demonstration items take the prompts of any file
    ``rlhfkit.data.read_examples`` reads.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    native = _read_native_items(path)
    if native is not None:
        return add_items(engine, project_id, native, source=str(path))
    from rlhfkit import data

    if task_type == "comparison":
        pairs = data.read_preferences(path)
        raw = [
            {
                "prompt": p.prompt,
                "response_a": p.chosen,
                "response_b": p.rejected,
                "source": p.source,
            }
            for p in pairs
        ]
    elif task_type == "demonstration":
        examples = data.read_examples(path)
        raw = [
            {"prompt": e.prompt, "task_type": "demonstration", "source": e.source} for e in examples
        ]
    else:
        raise InputError(f"task_type: expected one of {', '.join(TASK_TYPES)}")
    return add_items(engine, project_id, raw, source=str(path))


def _read_native_items(path: Path) -> list[dict[str, Any]] | None:
    """Items in this module's own jsonl shape, or None when the file is in another format."""
    if path.suffix != ".jsonl":
        return None
    out = []
    with path.open(encoding="utf-8", errors="strict") as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                if (
                    not isinstance(obj, dict)
                    or "response_a" not in obj
                    and obj.get("task_type") != "demonstration"
                ):
                    return None
                obj.setdefault("source", f"{path.name}:{lineno}")
                out.append(obj)
        except UnicodeDecodeError:
            raise InputError(f"{path}: not UTF-8 text") from None
    return out


def get_item(engine: Engine, item_id: int) -> dict[str, Any]:
    with reading(engine) as conn:
        row = conn.execute(select(items).where(items.c.id == item_id)).mappings().first()
    if row is None:
        raise NotFound(f"item {item_id}: no such item")
    return dict(row)


def adjudicate(engine: Engine, item_id: int, answer: str | None) -> None:
    """Record an admin's final answer for an item (None clears it)."""
    if answer is not None and answer not in CHOICES:
        raise InputError(f"answer: expected one of {', '.join(CHOICES)}")
    get_item(engine, item_id)
    with writing(engine) as conn:
        conn.execute(items.update().where(items.c.id == item_id).values(adjudication=answer))


def progress(engine: Engine, project_id: int) -> dict[str, Any]:
    """Counts for the dashboard: items, gold items, judgments, complete items, share done."""
    project = get_project(engine, project_id)
    k = project["overlap_k"]
    in_project = items.c.project_id == project_id
    with reading(engine) as conn:
        n_items = conn.execute(select(func.count()).where(in_project)).scalar_one()
        n_gold = conn.execute(
            select(func.count()).where(in_project, items.c.is_gold.is_(True))
        ).scalar_one()
        n_complete, done = conn.execute(
            select(
                func.count().filter(items.c.n_done >= k), func.coalesce(func.sum(items.c.n_done), 0)
            ).where(in_project, items.c.is_gold.is_(False))
        ).one()
        n_judgments = conn.execute(
            select(func.count(judgments.c.id)).where(judgments.c.project_id == project_id)
        ).scalar_one()
    ordinary = n_items - n_gold
    return {
        "items": n_items,
        "gold_items": n_gold,
        "complete_items": n_complete,
        "judgments": n_judgments,
        "overlap_k": k,
        "done_share": int(done) / (ordinary * k) if ordinary else 0.0,
    }
