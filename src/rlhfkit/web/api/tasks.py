"""The rater's queue: next task, submit a judgment (idempotent), own judgments."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from rlhfkit.store import queue
from rlhfkit.web.deps import CurrentUser, EngineDep, Id, run_store
from rlhfkit.web.schemas import JudgmentCreate, JudgmentPublic, SubmitResult, TaskPublic

router = APIRouter(prefix="/api/v1", tags=["tasks"])


def task_public(task: queue.Task | None) -> TaskPublic | None:
    # vars, not asdict: asdict deep-copies the conversation, and this runs on every submit
    return None if task is None else TaskPublic(**vars(task))


@router.post(
    "/projects/{project_id}/tasks/next",
    response_model=TaskPublic,
    responses={204: {"description": "Nothing left for you in this project."}},
)
async def next_task(project_id: Id, user: CurrentUser, engine: EngineDep, request: Request):
    """Your open task in the project, or a new one. Issuing is a write, hence POST."""
    task = await run_store(request, queue.next_task, engine, project_id, user["id"])
    if task is None:
        return Response(status_code=204)
    return task_public(task)


@router.post("/assignments/{assignment_id}/judgment", response_model=SubmitResult)
async def submit(
    assignment_id: Id,
    body: JudgmentCreate,
    user: CurrentUser,
    engine: EngineDep,
    request: Request,
    response: Response,
    next: bool = Query(False, description="Also issue and return the next task."),
) -> SubmitResult:
    """Record a judgment. The same ``client_key`` again returns the first result (200)."""
    data = queue.JudgmentInput(**body.model_dump())
    judgment, created, following = await run_store(
        request, queue.submit_and_next, engine, assignment_id, user["id"], data, then_next=next
    )
    response.status_code = 201 if created else 200
    return SubmitResult(
        judgment=JudgmentPublic(**judgment), created=created, next=task_public(following)
    )


@router.get("/me/judgments", response_model=list[JudgmentPublic])
def my_judgments(
    user: CurrentUser,
    engine: EngineDep,
    project_id: int | None = Query(None, ge=1, le=2_147_483_647),
) -> list[dict]:
    """Your own judgments, newest first. Nobody else's are visible to a rater."""
    return queue.rater_judgments(engine, user["id"], project_id)
