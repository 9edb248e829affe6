"""Evaluation: one module per benchmark; metrics are pure functions of matches and ground truth."""
