"""The engine: the training loop, its schedule, DeepSpeed backend, checkpoints and logs."""
