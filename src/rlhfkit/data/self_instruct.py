"""Self-Instruct seed tasks (``seed_tasks.jsonl``): human-written instructions with instances.

Each task ``{"id", "name", "instruction", "instances": [{"input", "output"}], ...}`` gives one
demonstration per instance: the instruction (and the instance's input) is the prompt, the
output is the completion.

Example::

    demos = list(examples(Path("seed_tasks.jsonl")))   # 175 tasks, one instance each
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rlhfkit.data.conversation import checked_example, instruction_prompt, text_field
from rlhfkit.data.files import iter_json_lines, json_type
from rlhfkit.data.records import Example
from rlhfkit.errors import InputError


def examples(path: Path) -> Iterator[Example]:
    """One checked demonstration per task instance."""
    for line, task in iter_json_lines(path):
        where = f"{path}:{line}"
        missing = [k for k in ("id", "instruction", "instances") if k not in task]
        if missing:
            raise InputError(
                f"{where}: task has no {', '.join(missing)}; expected self-instruct keys id, "
                f"instruction, instances (keys found: {', '.join(task) or 'none'})"
            )
        instruction = text_field(task["instruction"], where, "instruction")
        instances = task["instances"]
        if not isinstance(instances, list) or not instances:
            raise InputError(
                f"{where}: instances is a {json_type(instances)}; expected a non-empty list of "
                '{"input", "output"} objects'
            )
        meta = {k: v for k, v in task.items() if k not in ("id", "instruction", "instances")}
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict) or "output" not in instance:
                raise InputError(
                    f"{where}: instances[{i}] is not an object with an output; expected "
                    '{"input", "output"}'
                )
            input_text = text_field(instance.get("input", ""), where, f"instances[{i}].input")
            output = text_field(instance["output"], where, f"instances[{i}].output")
            example = Example(
                prompt=instruction_prompt(instruction, input_text),
                completion=output,
                item_id=f"{task['id']}#{i}" if len(instances) > 1 else str(task["id"]),
                source=where,
                meta=dict(meta),
            )
            yield checked_example(example, where)
