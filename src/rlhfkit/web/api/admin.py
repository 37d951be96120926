"""Admin resources: users, the pay ledger, exports."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Query, Response

from rlhfkit.store import export, ledger, projects
from rlhfkit.store import users as store_users
from rlhfkit.web.deps import CurrentAdmin, EngineDep, Id
from rlhfkit.web.schemas import BonusCreate, PaySummary, TokenPublic, UserCreate, UserPublic

router = APIRouter(prefix="/api/v1", tags=["admin"])


@router.get("/users", response_model=list[UserPublic])
def list_users(_: CurrentAdmin, engine: EngineDep) -> list[dict]:
    return store_users.list_users(engine)


@router.post("/users", response_model=UserPublic, status_code=201)
def create_user(body: UserCreate, _: CurrentAdmin, engine: EngineDep) -> dict:
    uid = store_users.create_user(engine, body.username, body.password, body.role)
    return store_users.get_user(engine, uid)


@router.post("/users/{user_id}/tokens", response_model=TokenPublic, status_code=201)
def create_user_token(user_id: Id, _: CurrentAdmin, engine: EngineDep) -> TokenPublic:
    """A token for a user (e.g. a simulated rater's script); shown once."""
    store_users.get_user(engine, user_id)
    return TokenPublic(token=store_users.create_token(engine, user_id, "issued by admin"))


@router.get("/ledger", response_model=list[PaySummary])
def pay_summary(
    _: CurrentAdmin,
    engine: EngineDep,
    project_id: int | None = Query(None, ge=1, le=2_147_483_647),
) -> list[dict]:
    """Totals per rater and project, effective hourly rate and the minimum-wage flag."""
    return ledger.pay_summary(engine, project_id=project_id)


@router.post("/ledger/bonuses", status_code=201, response_model=dict[str, int])
def add_bonus(body: BonusCreate, _: CurrentAdmin, engine: EngineDep) -> dict[str, int]:
    entry = ledger.add_bonus(engine, body.rater_id, body.project_id, body.amount_cents, body.note)
    return {"id": entry}


def _file_response(write, media_type: str, filename: str) -> Response:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / filename
        write(path)
        content = path.read_bytes()
    return Response(
        content,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/ledger.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def ledger_csv(
    _: CurrentAdmin,
    engine: EngineDep,
    project_id: int | None = Query(None, ge=1, le=2_147_483_647),
    totals: bool = False,
) -> Response:
    """Ledger entries (or totals per rater) as CSV."""
    return _file_response(
        lambda p: ledger.export_ledger_csv(engine, p, project_id=project_id, totals=totals),
        "text/csv",
        "ledger-totals.csv" if totals else "ledger.csv",
    )


@router.get(
    "/projects/{project_id}/export/preferences",
    response_class=Response,
    responses={200: {"content": {"application/jsonl": {}}}},
)
def export_preferences(
    project_id: Id,
    _: CurrentAdmin,
    engine: EngineDep,
    include_ties: bool = False,
    target_mix: str | None = Query(
        None, max_length=1000, description="Reweight groups, e.g. country=IN:0.5,US:0.5"
    ),
) -> Response:
    """Preference pairs as TRL jsonl with rater ids, labels and group tags."""
    projects.get_project(engine, project_id)
    mix = export.parse_target_mix(target_mix) if target_mix else None
    return _file_response(
        lambda p: export.export_preferences(
            engine, project_id, p, include_ties=include_ties, target_mix=mix
        ),
        "application/jsonl",
        f"preferences-{project_id}.jsonl",
    )


@router.get(
    "/projects/{project_id}/export/demonstrations",
    response_class=Response,
    responses={200: {"content": {"application/jsonl": {}}}},
)
def export_demonstrations(project_id: Id, _: CurrentAdmin, engine: EngineDep) -> Response:
    """Written demonstrations as TRL prompt-completion jsonl (SFT data)."""
    projects.get_project(engine, project_id)
    return _file_response(
        lambda p: export.export_demonstrations(engine, project_id, p),
        "application/jsonl",
        f"demonstrations-{project_id}.jsonl",
    )
