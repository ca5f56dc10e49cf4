"""Link prediction on the music graph: R-GCN encoder + DistMult decoder (seed 000 §2.2, §4.4; Schlichtkrull
et al. 2017 §4), trained with filtered negative sampling; evaluated by filtered MRR / Hits@1,3,10 on the
held-out tracks' ``has_genre`` triples and by the accuracy / macro-F1 of their genre predicted by ranking
the genre nodes (comparable with the classifiers' accuracy).

Training (choices where the seed is silent):
- every step is full-graph. A random ``target_fraction`` of the training triples are the step's positive
  targets and are removed from that step's message-passing graph (Schlichtkrull's sampled-edge training;
  it matters here: held-out tracks have no ``has_genre`` edge at test time, so the encoder must learn to
  score a track's genre without seeing that edge);
- ``num_negatives`` filtered negatives per positive (head or tail corrupted, seed §2.2's negative
  injection), typed (``typed_negatives``: a genre is replaced by a genre, a track by a track) so that the
  decoder learns to tell genres apart; never a true triple;
- loss: binary cross-entropy with logits (Schlichtkrull eq. 7), averaged per relation and then over
  relations (``similar_to`` has k times more triples than ``has_genre``), plus ``reg`` x mean squared
  relation embedding (Schlichtkrull's L2 on the decoder);
- Adam, lr 0.01 (Schlichtkrull §5).

The network's sizes come from the graph: when ``in_dim`` / ``num_free_nodes`` / ``num_relations`` are not
given, ``setup`` reads them from the DataModule's graph and records them in the hyper-parameters, so a
checkpoint rebuilds the same network.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from audiognn.linkpred_metrics import HITS_AT, filtered_negative_sampling, filtered_ranks, ranking_metrics
from audiognn.models.rgcn import DistMult, RGCNEncoder


class LinkPrediction(L.LightningModule):
    """R-GCN + DistMult link predictor over a :class:`datamodules.genre_graph.GenreGraphDataModule` graph.

    Args:
        num_classes: genres (linked from the DataModule by train.py; read from the graph otherwise).
        hidden, num_layers, num_bases / num_blocks, dropout: encoder (audiognn.models.rgcn.RGCNEncoder).
        lr, weight_decay: Adam.
        num_negatives: negatives per positive; typed_negatives: corrupt within the node type.
        target_fraction: share of training triples used as targets (and hidden) per step.
        reg: L2 weight on the relation embeddings.
        eval_chunk: test triples scored at once against all nodes (memory: chunk x N floats).
        multilabel, data_info: linked from the DataModule by train.py; ``data_info["classes"]`` names the
            genres (``class_names``, for plots). On a multi-label set the accuracy uses each track's first
            label.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        hidden: int = 64,
        num_layers: int = 2,
        num_bases: int | None = 4,
        num_blocks: int | None = None,
        dropout: float = 0.2,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        num_negatives: int = 8,
        typed_negatives: bool = True,
        target_fraction: float = 0.5,
        reg: float = 0.01,
        eval_chunk: int = 1024,
        in_dim: int | None = None,
        num_free_nodes: int | None = None,
        num_relations: int | None = None,
        multilabel: bool = False,
        data_info: dict | None = None,
    ):
        super().__init__()
        if not 0.0 < target_fraction < 1.0:
            raise ValueError(f"target_fraction must be in (0, 1), got {target_fraction}")
        self.save_hyperparameters()
        self.class_names = list((data_info or {}).get("classes") or []) or None
        self.encoder: RGCNEncoder | None = None
        self.decoder: DistMult | None = None
        if None not in (in_dim, num_free_nodes, num_relations, num_classes):
            self._build()

    # --- construction --------------------------------------------------------------------------------
    def _build(self) -> None:
        hp = self.hparams
        self.encoder = RGCNEncoder(
            hp.in_dim,
            hp.num_free_nodes,
            hp.num_relations,
            hp.hidden,
            hp.num_layers,
            hp.num_bases,
            hp.num_blocks,
            hp.dropout,
        )
        self.decoder = DistMult(hp.num_relations, hp.hidden)
        C = hp.num_classes
        for stage in ("val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(C, average="micro"))
            setattr(self, f"{stage}_f1", MulticlassF1Score(C, average="macro"))

    def setup(self, stage: str) -> None:
        if self.encoder is not None:
            return
        dm = self.trainer.datamodule if self.trainer is not None else None
        graph = getattr(dm, "graph", None)
        if graph is None:
            raise ValueError(
                "LinkPrediction needs a DataModule with a `graph` (datamodules.genre_graph."
                "GenreGraphDataModule), or in_dim / num_free_nodes / num_relations / num_classes"
            )
        G = int(graph.genre_ids.numel())
        if self.hparams.num_classes is not None and self.hparams.num_classes != G:
            raise ValueError(f"num_classes={self.hparams.num_classes} but the graph has {G} genre nodes")
        self.hparams.update(
            in_dim=int(graph.x.shape[1]),
            num_free_nodes=int(graph.num_nodes - graph.x.shape[0]),
            num_relations=int(graph.num_relations),
            num_classes=G,
        )
        self._build()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # --- model ---------------------------------------------------------------------------------------
    def encode(self, graph, edge_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Node states ``[N, H]`` from the message graph (optionally only the edges in ``edge_mask``)."""
        ei, et = graph.edge_index, graph.edge_type
        if edge_mask is not None:
            ei, et = ei[:, edge_mask], et[edge_mask]
        return self.encoder(graph.x, ei, et)

    def genre_scores(self, z: torch.Tensor, graph, tracks: torch.Tensor) -> torch.Tensor:
        """``[n, G]``: DistMult score of (track, has_genre, g) for every genre node g."""
        from datamodules.genre_graph import HAS_GENRE

        q = torch.stack([tracks, torch.full_like(tracks, HAS_GENRE), tracks], 1)  # tail is replaced
        return self.decoder.score_all(z, q, "tail", candidates=graph.genre_ids)

    # --- steps ---------------------------------------------------------------------------------------
    def training_step(self, graph, batch_idx):
        hp = self.hparams
        E = graph.edge_type.numel()
        target = torch.rand(E, device=self.device) < hp.target_fraction  # [E]
        triples = torch.stack([graph.edge_index[0], graph.edge_type, graph.edge_index[1]], 1)  # [E, 3]
        pos = triples[target]
        z = self.encode(graph, ~target)  # [N, H]
        neg, _ = filtered_negative_sampling(
            pos,
            graph.known_keys,
            graph.num_nodes,
            hp.num_relations,
            hp.num_negatives,
            node_lo=graph.node_lo if hp.typed_negatives else None,
            node_hi=graph.node_hi if hp.typed_negatives else None,
        )
        scores = torch.cat([self.decoder(z, pos), self.decoder(z, neg)])
        labels = torch.cat(
            [torch.ones(len(pos), device=self.device), torch.zeros(len(neg), device=self.device)]
        )
        rel = torch.cat([pos[:, 1], neg[:, 1]])
        bce = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
        R = hp.num_relations
        per_rel_sum = torch.zeros(R, device=self.device).index_add_(0, rel, bce)
        per_rel_n = torch.zeros(R, device=self.device).index_add_(0, rel, torch.ones_like(bce))
        present = per_rel_n > 0
        loss = (per_rel_sum[present] / per_rel_n[present]).mean() + hp.reg * self.decoder.rel.pow(2).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        return loss

    def _evaluate(self, graph, stage: str):
        z = self.encode(graph)
        triples = getattr(graph, f"{stage}_triples")
        ranks = []
        for side in ("head", "tail"):
            for i in range(0, triples.shape[0], self.hparams.eval_chunk):
                t = triples[i : i + self.hparams.eval_chunk]
                s = self.decoder.score_all(z, t, side)  # [e, N]
                ranks.append(
                    filtered_ranks(s, t, graph.known_keys, graph.num_nodes, self.hparams.num_relations, side)
                )
        if ranks:
            for name, v in ranking_metrics(torch.cat(ranks), HITS_AT).items():
                self.log(f"{stage}/{name}", v, batch_size=1)
        tracks, labels = getattr(graph, f"{stage}_tracks"), getattr(graph, f"{stage}_labels")
        logits = self.genre_scores(z, graph, tracks)  # [n, G]
        preds = logits.argmax(-1)
        acc, f1 = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_f1")
        acc(preds, labels)
        f1(preds, labels)
        self.log(f"{stage}/acc", acc, prog_bar=True, batch_size=1)
        self.log(f"{stage}/f1", f1, batch_size=1)
        return {"logits": logits, "preds": preds, "target": labels}

    def validation_step(self, graph, batch_idx):
        return self._evaluate(graph, "val")

    def test_step(self, graph, batch_idx):
        return self._evaluate(graph, "test")
