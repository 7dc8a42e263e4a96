"""The seven tasks, one module each, all implementing `base.Task`; found by scanning this package.

    get_task("motion-forecasting")     the Task object of a task name
    task_for_architecture(name)        the Task whose model class a saved config names
    TASK_NAMES                         every task, in README order
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import ClassificationTask, Task, TaskData, TokenGrid


def _discover() -> dict[str, Task]:
    tasks = []
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name.startswith("_") or module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        if isinstance(getattr(module, "TASK", None), Task):
            tasks.append(module.TASK)
    return {task.name: task for task in sorted(tasks, key=lambda task: task.position)}


TASKS = _discover()
TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> Task:
    from ..errors import UsageError

    if name not in TASKS:
        raise UsageError(f"Unknown task {name!r}; tasks: {', '.join(TASK_NAMES)}.")
    return TASKS[name]


def task_for_architecture(architecture: str) -> Task | None:
    """The task whose head class is called `architecture` (what a saved config's `architectures` lists)."""
    return next((task for task in TASKS.values() if task.model_class.__name__ == architecture), None)


__all__ = ["TASKS", "TASK_NAMES", "ClassificationTask", "Task", "TaskData", "TokenGrid", "get_task",
           "task_for_architecture"]
