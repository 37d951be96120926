"""Rater pages: own projects and earnings, the comparison/demonstration page, the profile."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from rlhfkit.store import ledger, projects, queue
from rlhfkit.store import users as store_users
from rlhfkit.store.schema import PROFILE_FIELDS
from rlhfkit.web.deps import EngineDep, Id, PageRater, check_csrf, render

router = APIRouter()
Text = Annotated[str, Form(max_length=20_000)]


@router.get("/rate")
def rater_home(request: Request, user: PageRater, engine: EngineDep):
    mine = projects.list_projects(engine, member_id=user["id"])
    pay = {row["project_id"]: row for row in ledger.pay_summary(engine, rater_id=user["id"])}
    return render(request, "rater_home.html", user, projects=mine, pay=pay)


@router.get("/rate/{project_id}")
def task_page(request: Request, project_id: Id, user: PageRater, engine: EngineDep):
    project = projects.get_project(engine, project_id)
    task = queue.next_task(engine, project_id, user["id"])
    pay = ledger.pay_summary(engine, project_id=project_id, rater_id=user["id"])
    return render(
        request,
        "task.html",
        user,
        project=project,
        task=task,
        pay=pay[0] if pay else None,
        client_key=uuid.uuid4().hex,
    )


@router.post("/rate/{project_id}/{assignment_id}")
def submit_task(
    project_id: Id,
    assignment_id: Id,
    user: PageRater,
    engine: EngineDep,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    client_key: Annotated[str, Form(max_length=64)] = "",
    choice: Annotated[str | None, Form(max_length=16)] = None,
    strength: Annotated[int | None, Form(ge=1, le=3)] = None,
    labels_A: Annotated[list[str], Form(max_length=32)] = [],  # noqa: B006 (FastAPI form)
    labels_B: Annotated[list[str], Form(max_length=32)] = [],  # noqa: B006
    comment: Annotated[str, Form(max_length=2000)] = "",
    demonstration: Text = "",
    time_on_task_ms: Annotated[int | None, Form(ge=0, le=10**9)] = None,
):
    check_csrf(user, csrf_token)
    project = projects.get_project(engine, project_id)
    labels = {}
    if choice is not None:
        for side, ticked in (("A", labels_A), ("B", labels_B)):
            labels[side] = {name: name in ticked for name in project["label_set"]}
            unknown = set(ticked) - set(project["label_set"])
            if unknown:
                labels[side].update({name: True for name in unknown})  # refused by the store
    data = queue.JudgmentInput(
        client_key=client_key,
        choice=choice,
        strength=strength if choice in ("A", "B") else None,
        labels=labels,
        demonstration=demonstration or None,
        comment=comment or None,
        time_on_task_ms=time_on_task_ms,
    )
    queue.submit_judgment(engine, assignment_id, user["id"], data)
    return RedirectResponse(f"/rate/{project_id}", status_code=303)


@router.get("/me/profile")
def profile_page(request: Request, user: PageRater, engine: EngineDep):
    profile = store_users.profile_of(user)
    return render(request, "profile.html", user, profile=profile, fields=PROFILE_FIELDS)


@router.post("/me/profile")
def save_profile(
    user: PageRater,
    engine: EngineDep,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    consent: Annotated[bool, Form()] = False,
    country: Annotated[str, Form(max_length=100)] = "",
    languages: Annotated[str, Form(max_length=100)] = "",
    age_band: Annotated[str, Form(max_length=100)] = "",
    gender: Annotated[str, Form(max_length=100)] = "",
    education: Annotated[str, Form(max_length=100)] = "",
    expertise: Annotated[str, Form(max_length=100)] = "",
):
    check_csrf(user, csrf_token)
    fields = dict(
        country=country,
        languages=languages,
        age_band=age_band,
        gender=gender,
        education=education,
        expertise=expertise,
    )
    store_users.update_profile(engine, user["id"], consent, fields)
    return RedirectResponse("/me/profile", status_code=303)


@router.post("/me/profile/delete")
def delete_profile(
    user: PageRater, engine: EngineDep, csrf_token: Annotated[str, Form(max_length=100)] = ""
):
    check_csrf(user, csrf_token)
    store_users.delete_profile(engine, user["id"])
    return RedirectResponse("/me/profile", status_code=303)
