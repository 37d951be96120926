import pytest

from rlhfkit.errors import InputError
from rlhfkit.store import Conflict
from rlhfkit.store import users as u


def test_passwords_are_argon2_and_checked(engine):
    uid = u.create_user(engine, "alice", "correct horse", role="admin")
    row = u.get_user(engine, uid)
    assert row["password_hash"].startswith("$argon2id$")
    assert "correct horse" not in row["password_hash"]
    assert u.authenticate(engine, "alice", "correct horse")["id"] == uid
    assert u.authenticate(engine, "alice", "wrong password") is None
    assert u.authenticate(engine, "nobody", "correct horse") is None


def test_tokens_are_stored_hashed_and_resolve_to_their_user(engine):
    uid = u.create_user(engine, "bob", "password1")
    token = u.create_token(engine, uid, "script")
    assert u.user_for_token(engine, token)["username"] == "bob"
    assert u.user_for_token(engine, token + "x") is None
    assert u.user_for_token(engine, "") is None
    from sqlalchemy import select

    from rlhfkit.store.schema import api_tokens

    with engine.connect() as conn:
        stored = conn.execute(select(api_tokens.c.token_hash)).scalar_one()
    assert token not in stored


@pytest.mark.parametrize(
    "username,password,role,match",
    [
        ("", "password1", "rater", "username"),
        ("x" * 65, "password1", "rater", "username"),
        ("bad name!", "password1", "rater", "username"),
        ("carol", "short", "rater", "password"),
        ("carol", "password1", "boss", "role"),
        (None, "password1", "rater", "username"),
    ],
)
def test_bad_accounts_are_refused_with_the_field_named(engine, username, password, role, match):
    with pytest.raises(InputError, match=match):
        u.create_user(engine, username, password, role)


def test_usernames_are_unique(engine):
    u.create_user(engine, "dave", "password1")
    with pytest.raises(Conflict, match="taken"):
        u.create_user(engine, "dave", "password2")


def test_profile_needs_consent_and_can_be_deleted(engine):
    uid = u.create_user(engine, "erin", "password1")
    u.update_profile(engine, uid, False, {"country": "NZ"})
    assert u.profile_of(u.get_user(engine, uid))["country"] is None
    u.update_profile(engine, uid, True, {"country": "NZ", "languages": "en, mi"})
    assert u.profile_of(u.get_user(engine, uid)) == {
        "country": "NZ",
        "languages": "en, mi",
        "age_band": None,
        "gender": None,
        "education": None,
        "expertise": None,
    }
    u.delete_profile(engine, uid)
    row = u.get_user(engine, uid)
    assert not row["profile_consent"] and row["country"] is None and row["languages"] is None


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"shoe_size": "9"}, "unknown"),
        ({"country": "x" * 101}, "country"),
        ({"gender": 5}, "gender"),
    ],
)
def test_bad_profile_fields_are_refused(engine, fields, match):
    uid = u.create_user(engine, "fred", "password1")
    with pytest.raises(InputError, match=match):
        u.update_profile(engine, uid, True, fields)
