"""Models stage: backbones, their initialisations, and heads."""
