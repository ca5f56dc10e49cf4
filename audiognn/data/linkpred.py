"""Relations of the music knowledge graph for link prediction (Dhongade and Rovira, *Graph Neural Networks for
Music Genre Classification*, §2.2 and §4.4): the contract shared by the graph's builder
(:class:`datamodules.genre_graph.GenreGraphDataModule`) and the link predictor
(:class:`audiognn.tasks.link_prediction.LinkPrediction`).

A triple is ``(head, relation, tail)``; the relation id is the index of its name in :data:`RELATIONS`:

- ``HAS_GENRE`` (0): track -> genre, from the clip's labels;
- ``SIMILAR_TO`` (1): track -> track, the nearest tracks by feature similarity;
- ``BY_ARTIST`` (2): track -> artist, from the clip's metadata.
"""

from __future__ import annotations

RELATIONS: tuple[str, ...] = ("has_genre", "similar_to", "by_artist")
HAS_GENRE, SIMILAR_TO, BY_ARTIST = (RELATIONS.index(r) for r in ("has_genre", "similar_to", "by_artist"))
NUM_RELATIONS = len(RELATIONS)
