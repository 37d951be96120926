"""Admin pages: projects, import, invitations, dashboard, review, ledger, exports."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse

from rlhfkit.store import export, ledger, projects, queue, stats
from rlhfkit.store import users as store_users
from rlhfkit.store.feedback import feedback_counts
from rlhfkit.store.schema import PROFILE_FIELDS
from rlhfkit.web.api.admin import _file_response
from rlhfkit.web.deps import EngineDep, Id, PageAdmin, check_csrf, render

router = APIRouter(prefix="/admin")
Csrf = Annotated[str, Form(max_length=100)]
_ALLOWED_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".csv")


@router.get("")
def admin_home(request: Request, user: PageAdmin, engine: EngineDep):
    rows = [(p, projects.progress(engine, p["id"])) for p in projects.list_projects(engine)]
    return render(
        request,
        "admin_home.html",
        user,
        projects=rows,
        users=store_users.list_users(engine),
        feedback=feedback_counts(engine),
    )


@router.post("/users")
def create_user(
    user: PageAdmin,
    engine: EngineDep,
    csrf_token: Csrf = "",
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    role: Annotated[str, Form(max_length=16)] = "rater",
):
    check_csrf(user, csrf_token)
    store_users.create_user(engine, username, password, role)
    return RedirectResponse("/admin", status_code=303)


@router.get("/projects/new")
def new_project_page(request: Request, user: PageAdmin):
    return render(request, "admin_new_project.html", user, defaults=projects.ProjectSettings(""))


@router.post("/projects")
def create_project(
    user: PageAdmin,
    engine: EngineDep,
    csrf_token: Csrf = "",
    name: Annotated[str, Form(max_length=200)] = "",
    instructions: Annotated[str, Form(max_length=20_000)] = "",
    label_set: Annotated[str, Form(max_length=3000)] = "",
    overlap_k: Annotated[int, Form(ge=1, le=100)] = 3,
    gold_share: Annotated[float, Form(ge=0, le=1)] = 0.1,
    pay_per_comparison: Annotated[float, Form(ge=0, le=10_000)] = 0.10,
    pay_per_demonstration: Annotated[float, Form(ge=0, le=10_000)] = 0.50,
    min_hourly_wage: Annotated[float, Form(ge=0, le=10_000)] = 15.0,
    assignment_ttl_s: Annotated[int, Form(ge=1, le=7 * 86400)] = 1800,
):
    check_csrf(user, csrf_token)
    settings = projects.ProjectSettings(
        name=name,
        instructions=instructions or projects.ProjectSettings("").instructions,
        label_set=[x.strip() for x in label_set.split(",") if x.strip()],
        overlap_k=overlap_k,
        gold_share=gold_share,
        pay_per_comparison_cents=round(pay_per_comparison * 100),
        pay_per_demonstration_cents=round(pay_per_demonstration * 100),
        min_hourly_wage_cents=round(min_hourly_wage * 100),
        assignment_ttl_s=assignment_ttl_s,
    )
    pid = projects.create_project(engine, settings)
    return RedirectResponse(f"/admin/projects/{pid}", status_code=303)


@router.get("/projects/{project_id}")
def project_page(request: Request, project_id: Id, user: PageAdmin, engine: EngineDep):
    project = projects.get_project(engine, project_id)
    member_ids = set(projects.members(engine, project_id))
    everyone = store_users.list_users(engine, role="rater")
    groups = {f: stats.group_shares(engine, project_id, f) for f in PROFILE_FIELDS}
    return render(
        request,
        "admin_project.html",
        user,
        project=project,
        progress=projects.progress(engine, project_id),
        raters=stats.rater_stats(engine, project_id),
        members=[u for u in everyone if u["id"] in member_ids],
        invitable=[u for u in everyone if u["id"] not in member_ids],
        groups=groups,
        pay=ledger.pay_summary(engine, project_id=project_id),
    )


@router.post("/projects/{project_id}/import")
async def import_items(
    project_id: Id,
    user: PageAdmin,
    engine: EngineDep,
    file: Annotated[UploadFile, File()],
    csrf_token: Csrf = "",
    task_type: Annotated[str, Form(max_length=16)] = "comparison",
):
    check_csrf(user, csrf_token)
    projects.get_project(engine, project_id)
    name = Path(file.filename or "items.jsonl").name
    suffix = "".join(Path(name).suffixes[-2:]) if name.endswith(".gz") else Path(name).suffix
    if not name.endswith(_ALLOWED_SUFFIXES):
        raise HTTPException(422, f"file: expected one of {', '.join(_ALLOWED_SUFFIXES)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(await file.read())
        projects.import_items_file(engine, project_id, path, task_type=task_type)
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.post("/projects/{project_id}/members")
def invite(
    project_id: Id,
    user: PageAdmin,
    engine: EngineDep,
    csrf_token: Csrf = "",
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
):
    """Invite an existing rater, or create the account first when a password is given."""
    check_csrf(user, csrf_token)
    projects.get_project(engine, project_id)
    found = store_users.find_user(engine, username)
    if found is None:
        if not password:
            raise HTTPException(404, f"no rater {username!r}; give a password to create one")
        uid = store_users.create_user(engine, username, password, "rater")
    else:
        uid = found["id"]
    projects.add_member(engine, project_id, uid)
    return RedirectResponse(f"/admin/projects/{project_id}", status_code=303)


@router.get("/projects/{project_id}/review")
def review_page(request: Request, project_id: Id, user: PageAdmin, engine: EngineDep):
    project = projects.get_project(engine, project_id)
    by_item: dict[int, list[dict]] = {}
    for j in queue.project_judgments(engine, project_id):
        by_item.setdefault(j["item_id"], []).append(j)
    names = {u["id"]: u["username"] for u in store_users.list_users(engine)}
    rows = []
    for item_id, js in sorted(by_item.items()):
        item = projects.get_item(engine, item_id)
        choices = {j["choice"] for j in js if j["choice"]}
        rows.append({"item": item, "judgments": js, "disagree": len(choices) > 1})
    rows.sort(key=lambda r: (not r["disagree"], r["item"]["id"]))
    return render(request, "admin_review.html", user, project=project, rows=rows, names=names)


@router.post("/items/{item_id}/adjudicate")
def adjudicate(
    item_id: Id,
    user: PageAdmin,
    engine: EngineDep,
    csrf_token: Csrf = "",
    answer: Annotated[str, Form(max_length=16)] = "",
):
    check_csrf(user, csrf_token)
    projects.adjudicate(engine, item_id, answer or None)
    item = projects.get_item(engine, item_id)
    return RedirectResponse(f"/admin/projects/{item['project_id']}/review", status_code=303)


@router.get("/ledger")
def ledger_page(request: Request, user: PageAdmin, engine: EngineDep):
    return render(
        request,
        "admin_ledger.html",
        user,
        rows=ledger.pay_summary(engine),
        raters=store_users.list_users(engine, role="rater"),
        projects=projects.list_projects(engine),
    )


@router.post("/ledger/bonus")
def bonus(
    user: PageAdmin,
    engine: EngineDep,
    csrf_token: Csrf = "",
    rater_id: Annotated[int, Form(ge=1, le=2_147_483_647)] = 0,
    project_id: Annotated[int, Form(ge=1, le=2_147_483_647)] = 0,
    amount: Annotated[float, Form(gt=0, le=100_000)] = 0,
    note: Annotated[str, Form(max_length=500)] = "",
):
    check_csrf(user, csrf_token)
    ledger.add_bonus(engine, rater_id, project_id, round(amount * 100), note)
    return RedirectResponse("/admin/ledger", status_code=303)


@router.get("/projects/{project_id}/export/{kind}")
def export_file(
    project_id: Id,
    kind: str,
    user: PageAdmin,
    engine: EngineDep,
    target_mix: str | None = None,
):
    projects.get_project(engine, project_id)
    if kind == "preferences":
        mix = export.parse_target_mix(target_mix) if target_mix else None
        return _file_response(
            lambda p: export.export_preferences(engine, project_id, p, target_mix=mix),
            "application/jsonl",
            f"preferences-{project_id}.jsonl",
        )
    if kind == "demonstrations":
        return _file_response(
            lambda p: export.export_demonstrations(engine, project_id, p),
            "application/jsonl",
            f"demonstrations-{project_id}.jsonl",
        )
    if kind == "ledger":
        return _file_response(
            lambda p: ledger.export_ledger_csv(engine, p, project_id=project_id),
            "text/csv",
            f"ledger-{project_id}.csv",
        )
    raise HTTPException(404, "export: expected preferences, demonstrations or ledger")


@router.get("/ledger.csv")
def ledger_csv(user: PageAdmin, engine: EngineDep, totals: bool = False):
    return _file_response(
        lambda p: ledger.export_ledger_csv(engine, p, totals=totals),
        "text/csv",
        "ledger-totals.csv" if totals else "ledger.csv",
    )
