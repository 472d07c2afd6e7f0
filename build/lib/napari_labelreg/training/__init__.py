"""Training: data preparation, two-stage sampling, augmentation, the loop."""
