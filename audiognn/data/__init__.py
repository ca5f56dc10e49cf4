"""Data-side contracts shared by the datamodules, the tasks' callers and the benchmarks.

Modules here hold formats and containers, never training code: ``shards`` (the log-mel shard format and
its ``dataset.json`` schema), and beside it the recommender graph container and the link-prediction
relation names. Anything in the project may import them.
"""
