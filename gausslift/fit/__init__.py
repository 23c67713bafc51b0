"""Per-scene reconstruction: initialisation, losses, density strategy, the trainer, checkpoints and
evaluation. Takes a :class:`gausslift.scene.Scene` (the CLI reads it); writes a run folder."""
