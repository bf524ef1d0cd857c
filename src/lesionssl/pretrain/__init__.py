"""Pretrain stage: Barlow Twins self-supervised learning on the unlabelled pool."""
