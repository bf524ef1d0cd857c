"""Self-supervised pretraining: methods (one file each), the Lightning module, monitors, the runner."""
