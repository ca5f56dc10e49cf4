"""Command-line tools that are neither training runs nor callbacks.

* ``python -m audiognn.cli.average_checkpoints a.ckpt b.ckpt -o avg.ckpt``: offline checkpoint averaging
  (console script ``audiognn-average-checkpoints``).
* ``python -m audiognn.cli.cross_validate --config conf/... --folds 1 2 3 --seeds 0 1 2``: fold
  cross-validation, one ``train.py fit`` + ``test`` per (seed, held-out fold) (console script ``audiognn-cv``).
* ``python -m audiognn.checkpoint resume-path|check``: the resume helper of the SLURM scripts.

Dataset preparation lives with the data: ``python -m datamodules.prepare`` (``audiognn-prepare``).
"""
