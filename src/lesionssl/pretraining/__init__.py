"""Self-supervised pretraining: methods (one file each), the Lightning module, monitors, the runner."""

#: The ``stage`` of the main epochs in ``history.csv`` (``warmup`` marks projector-only epochs).
PRETRAIN_STAGE = "pretrain"
