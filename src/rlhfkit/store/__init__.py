"""The platform's storage: schema, engines, migrations, the task queue, pay and exports.

Knows nothing of models or training: trainers read the files that :mod:`.export` writes.
"""

from rlhfkit.store.engine import make_engine, reading, writing
from rlhfkit.store.errors import Conflict, Forbidden, NotFound
from rlhfkit.store.migrate import upgrade
from rlhfkit.store.projects import ProjectSettings, add_items, create_project, import_items_file
from rlhfkit.store.queue import JudgmentInput, Task, next_task, submit_judgment

__all__ = [
    "Conflict",
    "Forbidden",
    "JudgmentInput",
    "NotFound",
    "ProjectSettings",
    "Task",
    "add_items",
    "create_project",
    "import_items_file",
    "make_engine",
    "next_task",
    "reading",
    "submit_judgment",
    "upgrade",
    "writing",
]
