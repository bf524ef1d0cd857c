"""Finetune stage: the seed's transfer protocol (Algorithm 1) and test-set evaluation."""
