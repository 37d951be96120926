"""rlhfkit: the whole RLHF loop, with the people in it visible."""

__version__ = "0.1.0"
