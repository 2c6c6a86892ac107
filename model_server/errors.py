"""Errors the model server reports to users (kept free of heavy imports so the CLI can catch them)."""


class ModelError(Exception):
    """A checkpoint, config or request the model code cannot use; the message is one actionable line."""


class CheckpointError(ModelError):
    """A checkpoint directory is missing files, has unknown model_type, or wrong/missing/unexpected weights."""
