"""The Accelerate training loop: planning a step, the objective, checkpoints, metrics, a whole run."""
