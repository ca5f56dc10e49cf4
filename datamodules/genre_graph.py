"""The music knowledge graph for genre link prediction (Dhongade and Rovira, *Graph Neural Networks for Music
Genre Classification*, §2.2 and §4.4), built from a shard set: see :class:`GenreGraphDataModule`."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Data, HeteroData

from audiognn.checkpoint import load_backbone
from audiognn.data.linkpred import BY_ARTIST, HAS_GENRE, NUM_RELATIONS, RELATIONS, SIMILAR_TO
from audiognn.data.shards import load_dataset_info, read_split_clips
from audiognn.features import mfcc_from_logmel
from audiognn.graph.segment_graph import segment_knn_graph
from audiognn.linkpred_metrics import known_triple_keys
from datamodules.readers.synthetic import ensure_synthetic
from datamodules.synthetic import VARIANTS, SyntheticConfig

__all__ = ["BY_ARTIST", "HAS_GENRE", "RELATIONS", "SIMILAR_TO", "GenreGraphDataModule", "checkpoint_embeddings", "load_backbone",
           "mfcc_statistics", "read_dataset_json", "read_shard_clips"]

read_shard_clips = read_split_clips  # the name this module had for it


def read_dataset_json(root: str | Path) -> dict:
    """``dataset.json`` of ``root`` with the keys the graph needs (``classes``, ``splits``, ``norm``), validated."""
    return load_dataset_info(root, required=("classes", "splits", "norm"))


def _normalised_mel(clip: dict, norm: dict) -> torch.Tensor:
    """The clip's valid frames of log-mel, normalised with the set's mean/std: ``[T, F]``."""
    return (torch.from_numpy(clip["mel"][: max(clip["valid"], 1)]) - norm["mean"]) / norm["std"]


def mfcc_statistics(clips: list[dict], n_mfcc: int, norm: dict) -> torch.Tensor:
    """``[n_clips, 2 * n_mfcc]``: mean and std over valid frames of the MFCCs of each clip's log-mel."""
    out = []
    for c in clips:
        m = mfcc_from_logmel(_normalised_mel(c, norm), n_mfcc)  # [T, M]
        out.append(torch.cat([m.mean(0), m.std(0, unbiased=False)]))
    return torch.stack(out)


@torch.no_grad()
def checkpoint_embeddings(clips: list[dict], backbone: nn.Module, norm: dict) -> torch.Tensor:
    """``[n_clips, D]``: ``backbone.embed`` of each clip's normalised log-mel (valid frames only)."""
    # one clip at a time: clips may differ in length
    return torch.stack([backbone.embed(_normalised_mel(c, norm)[None])[0] for c in clips])


def _edge_index(pairs: list[tuple[int, int]]) -> torch.Tensor:
    return torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)


class _Repeat(Dataset):
    def __init__(self, item, n: int):
        self.item, self.n = item, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.item


def _first(batch):
    return batch[0]


class GenreGraphDataModule(L.LightningDataModule):
    r"""The heterogeneous track / genre / artist graph of a shard set, for the link predictor of Dhongade and
    Rovira, *Graph Neural Networks for Music Genre Classification* (§2.2, §4.4).

    Node types (PyG ``HeteroData``, :attr:`hetero`): ``track`` (one per clip of the train / val / test splits;
    features below), ``genre`` (one per class of ``dataset.json``), ``artist`` (one per distinct artist in the
    clips' metadata, ``json["artist"]`` or ``json["meta"]["artist"]``). Relations
    (:mod:`audiognn.data.linkpred`), triples (head, relation, tail):

    - ``has_genre`` track -> genre, from the clip's labels;
    - ``similar_to`` track -> track: edge :math:`j \to i` for each of the ``k`` nearest tracks :math:`j` of
      :math:`i` by feature similarity (:func:`audiognn.graph.segment_graph.segment_knn_graph` on one "clip"
      of tracks);
    - ``by_artist`` track -> artist.

    Held-out tracks (the val and test splits) keep their features, ``similar_to`` and ``by_artist`` edges,
    but their ``has_genre`` edges are not in the message-passing graph: they are the validation / test
    triples, and the genre of a held-out track is predicted by ranking the genre nodes.

    Track features: ``"mfcc"``, the mean and standard deviation over the clip's valid frames of its MFCCs
    (:func:`audiognn.features.mfcc_from_logmel`, ``n_mfcc`` coefficients; §4.2); or ``"checkpoint"``, the
    clip embedding ``backbone.embed(x)`` of a trained audio classifier (:func:`audiognn.checkpoint.load_backbone`)
    on the normalised log-mel. Either is standardised with the mean / std of the training tracks:

    .. math::
        \mathbf{x}_i = (\mathbf{f}_i - \boldsymbol{\mu}_{\mathrm{train}}) / \boldsymbol{\sigma}_{\mathrm{train}}

    The graph is small (one node per clip), so training is full-graph: every batch is the whole graph as a
    homogeneous PyG ``Data`` (:attr:`graph`: ``x``, ``edge_index``, ``edge_type``, ``node_type``, the filter
    ``known_keys``, the typed corruption ranges ``node_lo`` / ``node_hi``, ``{val,test}_triples``,
    ``{val,test}_tracks`` / ``_labels``, ``genre_ids``), ``steps_per_epoch`` of them per epoch; the task
    samples its targets and negatives. Node ids: tracks first, then genres, then artists.

    Sizes linked into the model by ``train.py``: :attr:`num_classes`, :attr:`num_node_features`,
    :attr:`num_free_nodes` (genres + artists) and :attr:`num_relations`. :attr:`num_free_nodes` builds the
    graph when the shards exist (artists come from the clips' metadata); a synthetic set not written yet has
    no artists, which :meth:`setup` checks once it is written.

    Args:
        root (str): shard directory (with ``dataset.json``).
        features (str, optional): ``"mfcc"`` or ``"checkpoint"``. (default: ``"mfcc"``)
        checkpoint (str, optional): audio classifier checkpoint for ``"checkpoint"`` features.
            (default: ``None``)
        backbone (dict, optional): its backbone as ``{class_path, init_args}``; default: from the checkpoint's
            hyper-parameters or the run's ``config.yaml``. (default: ``None``)
        n_mfcc (int, optional): MFCC coefficients of ``"mfcc"`` features. (default: ``20``)
        k (int, optional): nearest tracks per track for ``similar_to``. (default: ``10``)
        metric (str, optional): ``"cosine"`` or ``"euclidean"``. (default: ``"cosine"``)
        train_split, val_split, test_split (str, optional): split names in ``dataset.json``; a missing test
            split falls back to val and a missing val split to test. (default: ``"train"``, ``"val"``,
            ``"test"``)
        steps_per_epoch (int, optional): full-graph training steps per epoch. (default: ``20``)
        synthetic (SyntheticConfig, optional): when set and ``root`` has no ``dataset.json``,
            :meth:`prepare_data` writes this synthetic set there (the same block as AudioShardDataModule's, so
            the classifiers and the link predictor share one set). (default: ``None``)
    """

    def __init__(
        self,
        root: str,
        features: str = "mfcc",
        checkpoint: str | None = None,
        backbone: dict | None = None,
        n_mfcc: int = 20,
        k: int = 10,
        metric: str = "cosine",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        steps_per_epoch: int = 20,
        synthetic: SyntheticConfig | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if features not in ("mfcc", "checkpoint"):
            raise ValueError(f"features must be 'mfcc' or 'checkpoint', got {features!r}")
        if features == "checkpoint" and not checkpoint:
            raise ValueError("features='checkpoint' needs `checkpoint`: the path of a trained audio classifier")
        self.root = Path(root)
        self.synthetic = SyntheticConfig.coerce(synthetic)
        if self.synthetic is not None and not (self.root / "dataset.json").exists():
            classes, multilabel = VARIANTS[self.synthetic.variant]
            splits = {s: {} for s in ("train", "val", "test") if getattr(self.synthetic, s)}
            self.info = {"classes": list(classes), "multilabel": multilabel, "splits": splits}
        else:
            self.info = read_dataset_json(self.root)
        self.class_names = list(self.info["classes"])
        self.num_classes = len(self.class_names)
        self.multilabel = bool(self.info.get("multilabel", False))
        self.num_relations = NUM_RELATIONS
        splits = self.info["splits"]
        if train_split not in splits:
            raise ValueError(f"{self.root / 'dataset.json'} has no split '{train_split}' (has {sorted(splits)})")
        if val_split not in splits and test_split not in splits:
            raise ValueError(f"{self.root / 'dataset.json'} has neither '{val_split}' nor '{test_split}' split: "
                             "link prediction needs held-out tracks")
        self.val_split = val_split if val_split in splits else test_split
        self.test_split = test_split if test_split in splits else val_split
        self.steps_per_epoch = steps_per_epoch
        self.graph: Data | None = None
        self.hetero: HeteroData | None = None
        self._backbone: nn.Module | None = None
        self._assumed_free_nodes: int | None = None

    @property
    def data_info(self) -> dict:
        """Classes, label kind, feature parameters, normalisation and name of the shard set."""
        return {
            "classes": self.class_names,
            "multilabel": self.multilabel,
            "features": self.info.get("features"),
            "norm": self.info.get("norm"),
            "name": self.info.get("name", ""),
        }

    @property
    def num_node_features(self) -> int:
        """Feature size of a track node: ``2 * n_mfcc``, or the backbone's ``embed_dim``."""
        if self.graph is not None:
            return int(self.graph.x.shape[1])
        if self.hparams["features"] == "mfcc":
            return 2 * self.hparams["n_mfcc"]
        return int(self.backbone().embed_dim)

    @property
    def num_free_nodes(self) -> int:
        """Nodes without features: genres and artists (builds the graph when the shards exist)."""
        if self.graph is None and (self.root / "dataset.json").exists():
            self.setup()
        if self.graph is not None:
            return int(self.graph.num_nodes - self.graph.num_tracks)
        self._assumed_free_nodes = self.num_classes  # synthetic clips carry no artist
        return self._assumed_free_nodes

    def backbone(self) -> nn.Module:
        """The trained backbone of ``checkpoint`` (``"checkpoint"`` features), loaded once."""
        if self._backbone is None:
            self._backbone = load_backbone(self.hparams["checkpoint"], self.hparams["backbone"])
        return self._backbone

    def prepare_data(self) -> None:
        """Write the synthetic set into ``root`` when ``synthetic`` is set and ``root`` has no ``dataset.json``
        (Lightning calls this on one process per node, before :meth:`setup`)."""
        if self.synthetic is not None:
            ensure_synthetic(self.root, self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        """Read the shards and build the graph (once)."""
        if self.graph is not None:
            return
        if not (self.root / "dataset.json").exists() and self.synthetic is not None:
            raise FileNotFoundError(f"{self.root / 'dataset.json'} not found: the synthetic set is written by "
                                    "prepare_data(), which the Trainer calls before setup(); call it first")
        self.info = read_dataset_json(self.root)
        self.hetero, self.graph = self.build()
        free = int(self.graph.num_nodes - self.graph.num_tracks)
        if self._assumed_free_nodes is not None and free != self._assumed_free_nodes:
            raise ValueError(f"{self.root}: the graph has {free} nodes without features (genres + artists), "
                             f"but {self._assumed_free_nodes} were reported before the set was written")

    def _clips(self) -> tuple[list[dict], list[str]]:
        """Every clip of the train / val / test splits and the split of each."""
        names = list(dict.fromkeys([self.hparams["train_split"], self.val_split, self.test_split]))
        clips, split_of = [], []
        for s in names:
            cs = read_split_clips(self.root, s)
            clips += cs
            split_of += [s] * len(cs)
        if not clips:
            raise ValueError(f"no clips in the shards under {self.root}")
        return clips, split_of

    def _track_features(self, clips: list[dict], is_train: torch.Tensor) -> torch.Tensor:
        """``[Nt, D]`` track features standardised with the training tracks' mean / std."""
        norm = self.info["norm"]
        if self.hparams["features"] == "mfcc":
            feats = mfcc_statistics(clips, self.hparams["n_mfcc"], norm)
        else:
            feats = checkpoint_embeddings(clips, self.backbone(), norm)
        mu, sd = feats[is_train].mean(0), feats[is_train].std(0).clamp_min(1e-6)
        return (feats - mu) / sd

    def build(self) -> tuple[HeteroData, Data]:
        """Read the shards and build (HeteroData, homogeneous ``Data`` for the R-GCN)."""
        hp = self.hparams
        clips, split_of = self._clips()
        feats = self._track_features(clips, torch.tensor([s == hp["train_split"] for s in split_of]))
        Nt, G = len(clips), self.num_classes
        artists = sorted({c["artist"] for c in clips if c["artist"] is not None})
        artist_id = {a: i for i, a in enumerate(artists)}
        hg = {s: [] for s in dict.fromkeys(split_of)}  # has_genre pairs by the track's split
        for i, (c, s) in enumerate(zip(clips, split_of, strict=True)):
            for lab in c["labels"]:
                if not 0 <= lab < G:
                    raise ValueError(f"clip '{c['key']}': label {lab} outside the {G} classes of dataset.json")
                hg[s].append((i, lab))

        h = HeteroData()
        h["track"].x = feats
        h["track"].split = split_of
        h["track"].key = [c["key"] for c in clips]
        h["genre"].num_nodes = G
        h["artist"].num_nodes = len(artists)
        # message passing: the training tracks' has_genre edges only
        h["track", "has_genre", "genre"].edge_index = _edge_index(hg.get(hp["train_split"], []))
        h["track", "similar_to", "track"].edge_index = segment_knn_graph(
            feats[None], hp["k"], temporal=False, metric=hp["metric"]
        )  # [2, Nt * k]
        h["track", "by_artist", "artist"].edge_index = _edge_index(
            [(i, artist_id[c["artist"]]) for i, c in enumerate(clips) if c["artist"] is not None]
        )
        homo = h.to_homogeneous(node_attrs=[], edge_attrs=[])
        N, genre0 = homo.num_nodes, Nt  # to_homogeneous keeps the node-type order: tracks, genres, artists

        def _triples(pairs):
            ei = _edge_index(pairs)
            return torch.stack([ei[0], torch.full_like(ei[0], HAS_GENRE), ei[1] + genre0], 1)  # [E, 3]

        def _held(s):
            idx = [i for i, t in enumerate(split_of) if t == s]
            return torch.tensor(idx, dtype=torch.long), torch.tensor([clips[i]["labels"][0] for i in idx])

        val_t, test_t = _triples(hg.get(self.val_split, [])), _triples(hg.get(self.test_split, []))
        train_t = torch.stack([homo.edge_index[0], homo.edge_type, homo.edge_index[1]], 1)
        bounds = torch.tensor([0, Nt, Nt + G, N])  # typed corruption: the id range of each node's type
        if self.multilabel:
            warnings.warn("GenreGraphDataModule on a multi-label set: the genre accuracy uses each track's first "
                          "label; the filtered MRR uses all", stacklevel=2)
        (val_tracks, val_labels), (test_tracks, test_labels) = _held(self.val_split), _held(self.test_split)
        graph = Data(
            x=feats, edge_index=homo.edge_index, edge_type=homo.edge_type, node_type=homo.node_type, num_nodes=N,
            known_keys=known_triple_keys(torch.cat([train_t, val_t, test_t]), N, NUM_RELATIONS),
            node_lo=bounds[homo.node_type], node_hi=bounds[homo.node_type + 1],
            val_triples=val_t, test_triples=test_t, val_tracks=val_tracks, val_labels=val_labels,
            test_tracks=test_tracks, test_labels=test_labels, genre_ids=torch.arange(genre0, genre0 + G),
        )
        graph.num_relations = NUM_RELATIONS
        graph.num_tracks = Nt
        return h, graph

    def _loader(self, n: int) -> DataLoader:
        if self.graph is None:
            self.setup()
        return DataLoader(_Repeat(self.graph, n), batch_size=1, collate_fn=_first)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.steps_per_epoch)

    def val_dataloader(self) -> DataLoader:
        return self._loader(1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(1)
