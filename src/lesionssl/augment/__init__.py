"""Augment stage: Barlow Twins two-view presets and fine-tuning / evaluation transforms."""
