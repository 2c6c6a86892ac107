"""Terminal tasks: Terminal-Bench 1.x and 2.0 (Harbor) task folders run with an agent in task containers."""
