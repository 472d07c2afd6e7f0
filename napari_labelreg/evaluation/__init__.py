"""Evaluation: the paper's scores, the baselines, paired statistics and patient-level cross-validation."""
