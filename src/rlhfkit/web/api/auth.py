"""Tokens and the signed-in user's own account: profile and earnings."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from rlhfkit.store import ledger
from rlhfkit.store import users as store_users
from rlhfkit.web.deps import CurrentUser, EngineDep
from rlhfkit.web.schemas import (
    MePublic,
    PaySummary,
    ProfilePublic,
    ProfileUpdate,
    TokenPublic,
    TokenRequest,
)

router = APIRouter(prefix="/api/v1", tags=["account"])


@router.post("/auth/token", response_model=TokenPublic, responses={401: {}})
def create_token(body: TokenRequest, engine: EngineDep) -> TokenPublic:
    """Exchange a username and password for a bearer token."""
    user = store_users.authenticate(engine, body.username, body.password)
    if user is None:
        raise HTTPException(401, "wrong username or password")
    return TokenPublic(token=store_users.create_token(engine, user["id"], "api login"))


def _me(user: dict) -> MePublic:
    profile = store_users.profile_of(user)
    return MePublic(
        id=user["id"],
        username=user["username"],
        role=user["role"],
        profile=ProfilePublic(consent=bool(user["profile_consent"]), **profile),
    )


@router.get("/me", response_model=MePublic)
def me(user: CurrentUser) -> MePublic:
    return _me(user)


@router.put("/me/profile", response_model=MePublic)
def update_profile(body: ProfileUpdate, user: CurrentUser, engine: EngineDep) -> MePublic:
    """Set the optional, self-described profile; without consent nothing is kept."""
    fields = body.model_dump(exclude={"consent"})
    store_users.update_profile(engine, user["id"], body.consent, fields)
    return _me(store_users.get_user(engine, user["id"]))


@router.delete("/me/profile", response_model=MePublic)
def delete_profile(user: CurrentUser, engine: EngineDep) -> MePublic:
    """Forget the profile and withdraw consent."""
    store_users.delete_profile(engine, user["id"])
    return _me(store_users.get_user(engine, user["id"]))


@router.get("/me/earnings", response_model=list[PaySummary])
def my_earnings(user: CurrentUser, engine: EngineDep) -> list[dict]:
    """Pay, time and effective hourly rate per project, for the signed-in rater only."""
    return ledger.pay_summary(engine, rater_id=user["id"])
