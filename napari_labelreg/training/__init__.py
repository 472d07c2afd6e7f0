"""The stages' fitting algorithms: data preparation, two-stage sampling and augmentation, budgets and
schedules, and the gland locator's, gland prior's and network's training steps (run by pipeline/)."""
