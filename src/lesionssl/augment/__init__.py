"""Augment stage: presets of the two views of a positive pair, and fine-tuning / evaluation transforms."""
