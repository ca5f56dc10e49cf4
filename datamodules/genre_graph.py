"""The music knowledge graph for genre link prediction (seed 000 §2.2, §4.4), built from a shard set.

Node types (PyG ``HeteroData``): ``track`` (one per clip of the shard set; features below), ``genre`` (one
per class of dataset.json), ``artist`` (one per distinct artist in the clips' metadata, when any clip has
one: ``json["artist"]`` or ``json["meta"]["artist"]``).

Relations (triples (head, relation, tail)):
- 0 ``has_genre``  track -> genre, from the clip's labels;
- 1 ``similar_to`` track -> track, the ``k`` nearest tracks by feature similarity (dense k-NN, edge j -> i
  for each neighbour j of i, :func:`audiognn.models.genre_gnn.segment_knn_graph` on one "clip" of tracks);
- 2 ``by_artist``  track -> artist.

Held-out tracks (the val and test splits) keep their features, ``similar_to`` and ``by_artist`` edges, but
their ``has_genre`` edges are removed from the message-passing graph: they are the validation / test
triples, and the genre of a held-out track is predicted by ranking the genre nodes.

Track features (``features``):
- ``"mfcc"``: mean and standard deviation over the clip's valid frames of its MFCCs (DCT-II of the
  log-mel, ``torchaudio.functional.create_dct``, ``n_mfcc`` coefficients) -- seed 000 §4.2;
- ``"checkpoint"``: the clip embedding ``backbone.embed(x)`` of a trained AudioClassifier checkpoint
  (``checkpoint``), computed on the normalised log-mel.
Either is standardised with the mean/std of the training tracks.

The graph is small (one node per clip), so training is full-graph: each "batch" is the whole graph
(``steps_per_epoch`` of them per epoch) and the LightningModule samples its target triples and negatives.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torchaudio.functional as AF
from torch.utils.data import DataLoader, Dataset
from torch_geometric.data import Data, HeteroData

from audiognn.linkpred_metrics import known_triple_keys

RELATIONS = ("has_genre", "similar_to", "by_artist")
HAS_GENRE, SIMILAR_TO, BY_ARTIST = 0, 1, 2


def read_shard_clips(root: str | Path, split: str) -> list[dict]:
    """Every clip of ``split`` in the shard set at ``root``: dicts with ``key``, ``mel`` (float32 ``[T, F]``),
    ``labels``, ``valid`` (valid frames) and ``artist`` (or None), in shard order."""
    import webdataset as wds

    root = Path(root)
    info = read_dataset_json(root)
    if split not in info["splits"]:
        return []
    urls = [str(root / s) for s in info["splits"][split]["shards"]]
    missing = [u for u in urls if not Path(u).exists()]
    if missing:
        raise FileNotFoundError(
            f"{root / 'dataset.json'} lists shard {missing[0]} of split '{split}', which does not exist"
        )
    ds = wds.WebDataset(
        urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
    ).decode()
    out = []
    for s in ds:
        meta = s["json"]
        if "mel.npy" not in s or "labels" not in meta:
            raise ValueError(f"sample '{s['__key__']}' in {s['__url__']} lacks mel.npy or json 'labels'")
        mel = np.asarray(s["mel.npy"], dtype=np.float32)
        artist = meta.get("artist") or (meta.get("meta") or {}).get("artist")
        out.append(
            {
                "key": s["__key__"],
                "mel": mel,
                "labels": list(meta["labels"]),
                "valid": int(meta.get("valid_frames") or mel.shape[0]),
                "artist": artist,
            }
        )
    return out


def read_dataset_json(root: str | Path) -> dict:
    path = Path(root) / "dataset.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: point `root` at a shard directory written by "
            "`python -m datamodules.prepare ...`"
        )
    with open(path) as f:
        info = json.load(f)
    for key in ("classes", "splits", "norm"):
        if key not in info:
            raise ValueError(f"{path} lacks the key '{key}'")
    return info


def mfcc_statistics(clips: list[dict], n_mfcc: int, norm: dict) -> torch.Tensor:
    """``[n_clips, 2 * n_mfcc]``: mean and std over valid frames of the MFCCs of each clip's log-mel."""
    n_mels = clips[0]["mel"].shape[1]
    dct = AF.create_dct(n_mfcc, n_mels, norm="ortho")  # [F, M]
    out = []
    for c in clips:
        mel = (torch.from_numpy(c["mel"][: max(c["valid"], 1)]) - norm["mean"]) / norm["std"]  # [T, F]
        m = mel @ dct  # [T, M]
        out.append(torch.cat([m.mean(0), m.std(0, unbiased=False)]))
    return torch.stack(out)


def load_backbone(checkpoint: str | Path, backbone: dict | None = None):
    """The backbone of an AudioClassifier checkpoint, in eval mode.

    The checkpoint stores the backbone's weights but not its class (AudioClassifier takes it as a callable),
    so ``backbone`` = ``{"class_path": ..., "init_args": {...}}`` names it; when None, it is read from the
    run's ``config.yaml`` (train.py writes it beside the logger's directory) next to the checkpoint or one
    level up (``runs/NAME/checkpoints/last.ckpt`` -> ``runs/NAME/config.yaml``).
    """
    import importlib
    from functools import partial

    import yaml

    from audiognn.tasks.audio_classifier import AudioClassifier

    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} not found")
    if backbone is None:
        for cfg in (ckpt.parent / "config.yaml", ckpt.parent.parent / "config.yaml"):
            if cfg.exists():
                with open(cfg) as f:
                    backbone = ((yaml.safe_load(f) or {}).get("model", {}).get("init_args", {}) or {}).get(
                        "backbone"
                    )
                if backbone:
                    break
    if not backbone or "class_path" not in backbone:
        raise ValueError(
            f"checkpoint {ckpt}: cannot tell its backbone class; give `backbone: {{class_path: "
            "audiognn.models.cnn.CNN, init_args: {...}}` (as in the training config)"
        )
    mod, _, name = backbone["class_path"].rpartition(".")
    fn = partial(getattr(importlib.import_module(mod), name), **(backbone.get("init_args") or {}))
    module = AudioClassifier.load_from_checkpoint(str(ckpt), map_location="cpu", backbone=fn)
    if not hasattr(module.backbone, "embed"):
        raise ValueError(f"checkpoint {ckpt}: backbone {backbone['class_path']} has no `embed` method")
    return module.backbone.eval()


@torch.no_grad()
def checkpoint_embeddings(clips: list[dict], backbone, norm: dict) -> torch.Tensor:
    """``[n_clips, D]``: ``backbone.embed`` of each clip's normalised log-mel (valid frames only)."""
    out = []
    for c in clips:  # one clip at a time: clips may differ in length
        x = (torch.from_numpy(c["mel"][: max(c["valid"], 1)]) - norm["mean"]) / norm["std"]  # [T, F]
        out.append(backbone.embed(x[None])[0])
    return torch.stack(out)


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
    """Heterogeneous track / genre / artist graph of a shard set (module docstring).

    Args:
        root: shard directory (with dataset.json).
        features: "mfcc" or "checkpoint"; checkpoint: path of an AudioClassifier checkpoint; backbone: its
            backbone as {class_path, init_args} (default: from the run's config.yaml, see load_backbone).
        n_mfcc: MFCC coefficients for "mfcc" features.
        k: nearest tracks per track for ``similar_to``; metric: "cosine" or "euclidean".
        train_split, val_split, test_split: split names in dataset.json (a missing test split falls back to
            val, a missing val split to test).
        steps_per_epoch: full-graph training steps per epoch.
        synthetic: when set and ``root`` has no dataset.json, ``prepare_data`` writes the synthetic set there
            (the same spec as AudioShardDataModule's: {"variant": "genre", "train": n, "val": n, "test": n,
            "seed": 0, "target_frames": 256}), so the classifiers and the link predictor share one set.
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
        synthetic: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if features not in ("mfcc", "checkpoint"):
            raise ValueError(f"features must be 'mfcc' or 'checkpoint', got {features!r}")
        if features == "checkpoint" and not checkpoint:
            raise ValueError(
                "features='checkpoint' needs `checkpoint`: the path of a trained AudioClassifier"
            )
        self.root = Path(root)
        self.synthetic = synthetic
        if synthetic is not None and not (self.root / "dataset.json").exists():
            from datamodules.synthetic import VARIANTS

            classes, multilabel = VARIANTS[synthetic.get("variant", "genre")]
            splits = {s: {} for s in ("train", "val", "test") if synthetic.get(s, 1)}
            self.info = {"classes": list(classes), "multilabel": multilabel, "splits": splits}
        else:
            self.info = read_dataset_json(self.root)
        self.class_names = list(self.info["classes"])
        self.num_classes = len(self.class_names)
        self.multilabel = bool(self.info.get("multilabel", False))
        splits = self.info["splits"]
        if train_split not in splits:
            raise ValueError(
                f"{self.root / 'dataset.json'} has no split '{train_split}' (has {sorted(splits)})"
            )
        if val_split not in splits and test_split not in splits:
            raise ValueError(
                f"{self.root / 'dataset.json'} has neither '{val_split}' nor '{test_split}' split: "
                "link prediction needs held-out tracks"
            )
        self.val_split = val_split if val_split in splits else test_split
        self.test_split = test_split if test_split in splits else val_split
        self.steps_per_epoch = steps_per_epoch
        self.graph: Data | None = None
        self.hetero: HeteroData | None = None

    @property
    def data_info(self) -> dict:
        return {
            "classes": self.class_names,
            "multilabel": self.multilabel,
            "features": self.info.get("features"),
            "norm": self.info.get("norm"),
            "name": self.info.get("name", ""),
        }

    def prepare_data(self) -> None:
        syn = self.synthetic
        if syn is None or (self.root / "dataset.json").exists():
            return
        from audiognn.features import FeatureConfig
        from datamodules.prepare import prepare, synthetic_result

        result = synthetic_result(
            syn.get("variant", "genre"),
            syn.get("train", 800),
            syn.get("val", 200),
            syn.get("test", 200),
            syn.get("seed", 0),
        )
        print(
            prepare(
                result,
                self.root,
                FeatureConfig(target_frames=syn.get("target_frames", 256)),
                workers=syn.get("workers", 2),
                shard_size=syn.get("shard_size", 64),
                source={"reader": "synthetic", **syn},
            )
        )

    def setup(self, stage: str | None = None) -> None:
        if self.graph is None:
            self.prepare_data()
            self.info = read_dataset_json(self.root)
            self.hetero, self.graph = self.build()

    def build(self) -> tuple[HeteroData, Data]:
        """Read the shards and build (HeteroData, homogeneous Data for R-GCN)."""
        from audiognn.models.genre_gnn import segment_knn_graph

        hp = self.hparams
        names = [hp["train_split"]] + [s for s in dict.fromkeys([self.val_split, self.test_split])]
        clips, split_of = [], []
        for s in names:
            cs = read_shard_clips(self.root, s)
            clips += cs
            split_of += [s] * len(cs)
        if not clips:
            raise ValueError(f"no clips in the shards under {self.root}")
        norm = self.info["norm"]
        if hp["features"] == "mfcc":
            feats = mfcc_statistics(clips, hp["n_mfcc"], norm)
        else:
            feats = checkpoint_embeddings(clips, load_backbone(hp["checkpoint"], hp["backbone"]), norm)
        is_train = torch.tensor([s == hp["train_split"] for s in split_of])
        mu, sd = feats[is_train].mean(0), feats[is_train].std(0).clamp_min(1e-6)
        feats = (feats - mu) / sd  # [Nt, D]
        Nt, G = len(clips), self.num_classes
        artists = sorted({c["artist"] for c in clips if c["artist"] is not None})
        artist_id = {a: i for i, a in enumerate(artists)}

        # has_genre, split by the track's split
        hg = {s: [] for s in names}
        for i, (c, s) in enumerate(zip(clips, split_of, strict=True)):
            for lab in c["labels"]:
                if not 0 <= lab < G:
                    raise ValueError(
                        f"clip '{c['key']}': label {lab} outside the {G} classes of dataset.json"
                    )
                hg[s].append((i, lab))

        def _ei(pairs):
            return torch.tensor(pairs, dtype=torch.long).t().reshape(2, -1)

        sim = segment_knn_graph(feats[None], hp["k"], temporal=False, metric=hp["metric"])  # [2, Nt*k]
        ba = _ei([(i, artist_id[c["artist"]]) for i, c in enumerate(clips) if c["artist"] is not None])

        h = HeteroData()
        h["track"].x = feats
        h["track"].split = split_of
        h["track"].key = [c["key"] for c in clips]
        h["genre"].num_nodes = G
        h["artist"].num_nodes = len(artists)
        h["track", "has_genre", "genre"].edge_index = _ei(
            hg[hp["train_split"]]
        )  # message passing: train only
        h["track", "similar_to", "track"].edge_index = sim
        h["track", "by_artist", "artist"].edge_index = ba
        homo = h.to_homogeneous(node_attrs=[], edge_attrs=[])
        N, R = homo.num_nodes, len(RELATIONS)
        genre0 = Nt  # to_homogeneous keeps the node-type order: tracks, genres, artists

        def _triples(pairs):
            ei = _ei(pairs)
            return torch.stack([ei[0], torch.full_like(ei[0], HAS_GENRE), ei[1] + genre0], 1)  # [E, 3]

        val_t, test_t = _triples(hg[self.val_split]), _triples(hg[self.test_split])
        train_t = torch.stack([homo.edge_index[0], homo.edge_type, homo.edge_index[1]], 1)
        known = known_triple_keys(torch.cat([train_t, val_t, test_t]), N, R)
        # typed corruption ranges: the id range of each node's type
        bounds = torch.tensor([0, Nt, Nt + G, N])
        lo, hi = bounds[homo.node_type], bounds[homo.node_type + 1]

        def _held(s):
            idx = [i for i, t in enumerate(split_of) if t == s]
            return torch.tensor(idx, dtype=torch.long), torch.tensor([clips[i]["labels"][0] for i in idx])

        val_tracks, val_labels = _held(self.val_split)
        test_tracks, test_labels = _held(self.test_split)
        if self.multilabel:
            warnings.warn(
                "GenreGraphDataModule on a multi-label set: the genre accuracy uses each track's first "
                "label; the filtered MRR uses all",
                stacklevel=2,
            )
        graph = Data(
            x=feats,
            edge_index=homo.edge_index,
            edge_type=homo.edge_type,
            node_type=homo.node_type,
            num_nodes=N,
            known_keys=known,
            node_lo=lo,
            node_hi=hi,
            val_triples=val_t,
            test_triples=test_t,
            val_tracks=val_tracks,
            val_labels=val_labels,
            test_tracks=test_tracks,
            test_labels=test_labels,
            genre_ids=torch.arange(genre0, genre0 + G),
        )
        graph.num_relations = R
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
