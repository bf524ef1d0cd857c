"""Optimisation building blocks shared by pretraining and fine-tuning: 1cycle and the LR finder."""
