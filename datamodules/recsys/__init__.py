"""Recommendation data: readers, features, splits, samplers and the `RecDataModule` (one module each).

The public names stay importable from ``datamodules.recsys`` (``datamodules.recsys.RecDataModule`` in configs).
`RecGraph`, the training-graph container the models are built from, lives in `audiognn.data.recgraph` and is
re-exported here.
"""

from audiognn.data.recgraph import RecGraph
from datamodules.recsys.datamodule import RecDataModule
from datamodules.recsys.features import MOOD_LEXICON, tag_emotion, tag_emotion_vectors, tag_text_features
from datamodules.recsys.readers import RecData, read_lastfm2k, read_msd_triplets, read_table
from datamodules.recsys.samplers import BPRTriples, UserBatches
from datamodules.recsys.splits import SPLITS, split_csr, split_interactions

__all__ = ["MOOD_LEXICON", "SPLITS", "BPRTriples", "RecData", "RecDataModule", "RecGraph", "UserBatches",
           "read_lastfm2k", "read_msd_triplets", "read_table", "split_csr", "split_interactions", "tag_emotion",
           "tag_emotion_vectors", "tag_text_features"]
