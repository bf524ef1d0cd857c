"""Evaluate stage: metrics from predicted probabilities."""
