"""Errors about bad input. The CLI prints their message (no traceback) and exits 2."""


class InputError(ValueError):
    """Bad input from a user: the message names the file and line (``PATH:LINE: ...``) or the
    field, and says what was expected."""
