"""Publishing: model cards (one template, task-specific fields), pushing a run folder, the Space bundle."""
