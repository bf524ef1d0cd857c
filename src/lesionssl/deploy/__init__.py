"""Putting a fine-tuned model to use: its saved form, and prediction on new images."""
