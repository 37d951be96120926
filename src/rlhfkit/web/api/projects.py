"""Projects (admin: create, import items, invite, watch, review; raters: list their own)."""

from __future__ import annotations

from dataclasses import fields

from fastapi import APIRouter, HTTPException, Query

from rlhfkit.store import projects as store_projects
from rlhfkit.store import queue, stats
from rlhfkit.store.schema import PROFILE_FIELDS
from rlhfkit.web.deps import CurrentAdmin, CurrentUser, EngineDep, Id, require_project_access
from rlhfkit.web.schemas import (
    Adjudication,
    ItemAdmin,
    ItemsAdded,
    ItemsCreate,
    JudgmentPublic,
    MemberAdd,
    Progress,
    ProjectCreate,
    ProjectPublic,
    RaterStats,
)

router = APIRouter(prefix="/api/v1", tags=["projects"])
_SETTINGS = {f.name for f in fields(store_projects.ProjectSettings)}


@router.get("/projects", response_model=list[ProjectPublic])
def list_projects(user: CurrentUser, engine: EngineDep) -> list[dict]:
    """Admins see all projects, raters the ones they were invited to."""
    member = None if user["role"] == "admin" else user["id"]
    return store_projects.list_projects(engine, member_id=member)


@router.post("/projects", response_model=ProjectPublic, status_code=201)
def create_project(body: ProjectCreate, _: CurrentAdmin, engine: EngineDep) -> dict:
    settings = store_projects.ProjectSettings(**body.model_dump(include=_SETTINGS))
    pid = store_projects.create_project(engine, settings)
    return store_projects.get_project(engine, pid)


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def get_project(project_id: Id, user: CurrentUser, engine: EngineDep) -> dict:
    project = store_projects.get_project(engine, project_id)
    require_project_access(engine, user, project_id)
    return project


@router.post("/projects/{project_id}/items", response_model=ItemsAdded, status_code=201)
def add_items(project_id: Id, body: ItemsCreate, _: CurrentAdmin, engine: EngineDep) -> ItemsAdded:
    """Add comparison or demonstration items; all or none are stored."""
    raw = [item.model_dump(exclude_none=True) for item in body.items]
    for item in raw:
        if isinstance(item["prompt"], list):
            item["prompt"] = [dict(m) for m in item["prompt"]]
    return ItemsAdded(added=store_projects.add_items(engine, project_id, raw))


@router.post("/projects/{project_id}/members", status_code=204)
def add_member(project_id: Id, body: MemberAdd, _: CurrentAdmin, engine: EngineDep) -> None:
    """Invite a rater to the project."""
    store_projects.add_member(engine, project_id, body.user_id)


@router.get("/projects/{project_id}/progress", response_model=Progress)
def progress(project_id: Id, _: CurrentAdmin, engine: EngineDep) -> dict:
    return store_projects.progress(engine, project_id)


@router.get("/projects/{project_id}/raters", response_model=list[RaterStats])
def rater_stats(project_id: Id, _: CurrentAdmin, engine: EngineDep) -> list[dict]:
    """Per rater: count, time, pay, agreement with peers, gold accuracy, position bias, flags."""
    store_projects.get_project(engine, project_id)
    return stats.rater_stats(engine, project_id)


@router.get("/projects/{project_id}/groups", response_model=dict[str, float])
def group_shares(
    project_id: Id,
    _: CurrentAdmin,
    engine: EngineDep,
    attribute: str = Query("country", max_length=32, description=", ".join(PROFILE_FIELDS)),
) -> dict[str, float]:
    """Share of the project's judgments by the raters' self-described group."""
    store_projects.get_project(engine, project_id)
    if attribute not in PROFILE_FIELDS:
        raise HTTPException(422, f"attribute: expected one of {', '.join(PROFILE_FIELDS)}")
    return stats.group_shares(engine, project_id, attribute)


@router.get("/projects/{project_id}/judgments", response_model=list[JudgmentPublic])
def project_judgments(project_id: Id, _: CurrentAdmin, engine: EngineDep) -> list[dict]:
    store_projects.get_project(engine, project_id)
    return queue.project_judgments(engine, project_id)


@router.get("/items/{item_id}", response_model=ItemAdmin)
def get_item(item_id: Id, _: CurrentAdmin, engine: EngineDep) -> dict:
    """An item with its gold answer (admins only)."""
    return store_projects.get_item(engine, item_id)


@router.post("/items/{item_id}/adjudication", response_model=ItemAdmin)
def adjudicate(item_id: Id, body: Adjudication, _: CurrentAdmin, engine: EngineDep) -> dict:
    """Record the admin's final answer for a disputed item."""
    store_projects.adjudicate(engine, item_id, body.answer)
    return store_projects.get_item(engine, item_id)
