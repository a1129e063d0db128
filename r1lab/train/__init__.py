"""Training stages: optimizer + schedules (``optim``), checkpoints/resume (``loop``), metrics (``metrics``),
data parallelism (``distributed``), pretraining (``pretrain``), context extension (``context``)."""
