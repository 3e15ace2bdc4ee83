"""One worker's run: building its parts, the epoch loop, evaluation, checkpoints, resume and stop requests."""
