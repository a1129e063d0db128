"""Training stages and their shared pieces: optimizer + schedules (``optim``), checkpoints/resume (``loop``), metrics
(``metrics``), data parallelism (``distributed``), pretraining data (``data``), pretraining (``pretrain``), the
base-model exact-match probe (``quick_eval``), context extension (``context``), SFT (``sft``)."""
