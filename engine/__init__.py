"""Training engine: distributed set-up, the (#GPUs, samples-per-GPU) setting, schedules, checkpoints, the trainer."""
