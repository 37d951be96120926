"""Store errors: each is an ``InputError`` (clear message, exit 2 on the command line) that the
web layer maps to one HTTP status."""

from rlhfkit.errors import InputError


class NotFound(InputError):
    """The thing asked for does not exist, or is not visible to the one asking (HTTP 404)."""


class Forbidden(InputError):
    """The one asking may not do this (HTTP 403)."""


class Conflict(InputError):
    """The request clashes with what is stored: a used key, an expired task (HTTP 409)."""
