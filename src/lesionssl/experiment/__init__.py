"""Experiment stage: initialisations x seeds under one protocol, resumable."""
