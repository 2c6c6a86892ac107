"""LoopCoder-Nano: task synthesis, the teacher and its trajectory dataset (docs/nano.md)."""
