"""The training engine shared by pretraining and fine-tuning: trainers and loggers (``trainer``),
the module base with its persistent optimiser and freezing (``modules``), callbacks, and the
transfer protocol - head epochs, LR choice, 1cycle - written once (``transfer``)."""
