"""The registration pipeline: stages (locate, prior, refine), their training loop, checkpoints and registration."""
