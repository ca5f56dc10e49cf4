"""Link prediction on the music graph (Dhongade and Rovira, *Graph Neural Networks for Music Genre
Classification*, §2.2 and §4.4; Schlichtkrull et al., *Modeling Relational Data with Graph Convolutional
Networks*, §4): an R-GCN encoder + DistMult decoder (:class:`audiognn.models.rgcn.RGCNLinkPredictor`) trained
with filtered negative sampling; evaluated by filtered MRR / Hits@1,3,10 on the held-out tracks' ``has_genre``
triples and by the accuracy / macro-F1 of their genre predicted by ranking the genre nodes (comparable with the
classifiers' accuracy).

Training (choices where the paper is silent):

- every step is full-graph (the batch is the whole graph). A random ``target_fraction`` of the training
  triples are the step's positive targets and are removed from that step's message-passing graph
  (Schlichtkrull's sampled-edge training; it matters here: held-out tracks have no ``has_genre`` edge at test
  time, so the encoder must learn to score a track's genre without seeing that edge);
- ``num_negatives`` filtered negatives per positive (head or tail corrupted: the "negative injection" of
  Dhongade and Rovira §2.2), typed (``typed_negatives``: a genre is replaced by a genre, a track by a track)
  so that the decoder learns to tell genres apart; never a true triple;
- loss: binary cross-entropy with logits (Schlichtkrull eq. 7), averaged per relation and then over relations
  (``similar_to`` has k times more triples than ``has_genre``), plus ``reg`` x mean squared relation
  embedding (Schlichtkrull §5's L2 on the decoder);
- Adam, lr 0.01 (Schlichtkrull §5: :class:`LinkPredictionAdam`), no schedule unless ``scheduler`` is given.

The graph (edges, node features, held-out triples, the filter) comes in the batches; the sizes the model needs
(``num_node_features``, ``num_free_nodes``, ``num_relations``, ``num_classes``) are init arguments, linked from
the DataModule by ``train.py`` and saved in the hyper-parameters with the model's class and arguments, so
``LinkPrediction.load_from_checkpoint(path)`` rebuilds the network without data.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from audiognn.checkpoint import build_from_spec, callable_spec
from audiognn.data.linkpred import HAS_GENRE, NUM_RELATIONS
from audiognn.linkpred_metrics import HITS_AT, filtered_negative_sampling, filtered_ranks, ranking_metrics
from audiognn.models.rgcn import RGCNLinkPredictor
from audiognn.tasks.optim import configure_schedule


class LinkPredictionAdam(torch.optim.Adam):
    """Adam with the learning rate of Schlichtkrull et al., *Modeling Relational Data with Graph Convolutional
    Networks*, §5 (0.01) as default.

    Args:
        params: parameters to optimise.
        lr (float, optional): learning rate. (default: ``0.01``)
        weight_decay (float, optional): L2 penalty. (default: ``0.0``)
    """

    def __init__(self, params, lr: float = 0.01, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay)


class LinkPrediction(L.LightningModule):
    """R-GCN + DistMult link predictor over the graph of
    :class:`datamodules.genre_graph.GenreGraphDataModule` (module docstring).

    Args:
        num_node_features, num_free_nodes: the graph's sizes (linked from the DataModule by ``train.py``).
        num_classes: genres (linked from the DataModule).
        model: the predictor, a callable of ``(num_node_features, num_free_nodes, num_relations)`` returning an
            :class:`~audiognn.models.rgcn.RGCNLinkPredictor`-like module (``forward(x, edge_index, edge_type)``
            -> node states, ``score``, ``score_all``, ``regularization``); a class, a ``functools.partial`` of
            one or a ``{class_path, init_args}`` dict (:func:`audiognn.checkpoint.callable_spec`).
            (default: ``RGCNLinkPredictor``)
        num_relations: relation types (linked from the DataModule). (default: ``3``)
        optimizer: optimiser callable. (default: :class:`LinkPredictionAdam`, Adam lr 0.01)
        scheduler: learning-rate schedule callable (``audiognn.tasks.optim``), or None. (default: ``None``)
        num_negatives: negatives per positive. (default: ``8``)
        typed_negatives: corrupt within the node type. (default: ``True``)
        target_fraction: share of training triples used as targets (and hidden) per step. (default: ``0.5``)
        reg: weight of the decoder's L2 penalty. (default: ``0.01``)
        eval_chunk: test triples scored at once against all nodes (memory: chunk x N floats). (default: ``1024``)
        multilabel, data_info: linked from the DataModule; ``data_info["classes"]`` names the genres
            (``class_names``, for plots). On a multi-label set the accuracy uses each track's first label.
    """

    def __init__(
        self,
        num_node_features: int,
        num_free_nodes: int,
        num_classes: int,
        model: Callable[[int, int, int], nn.Module] = RGCNLinkPredictor,
        num_relations: int = NUM_RELATIONS,
        optimizer: OptimizerCallable = LinkPredictionAdam,
        scheduler: LRSchedulerCallable | None = None,
        num_negatives: int = 8,
        typed_negatives: bool = True,
        target_fraction: float = 0.5,
        reg: float = 0.01,
        eval_chunk: int = 1024,
        multilabel: bool = False,
        data_info: dict | None = None,
    ):
        super().__init__()
        if not 0.0 < target_fraction < 1.0:
            raise ValueError(f"target_fraction must be in (0, 1), got {target_fraction}")
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        spec = callable_spec(model)
        if spec is not None:  # saved as data, so that load_from_checkpoint rebuilds the network alone
            self.hparams["model"] = spec
        self.model = build_from_spec(model, num_node_features, num_free_nodes, num_relations)
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.num_classes = num_classes
        self.class_names = list((data_info or {}).get("classes") or []) or None
        self.metrics = nn.ModuleDict({
            stage: MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro"),
                                     "f1": MulticlassF1Score(num_classes, average="macro")}, prefix=f"{stage}/")
            for stage in ("val", "test")
        })

    def configure_optimizers(self):
        return configure_schedule(self.optimizer_fn(self.parameters()), self.scheduler_fn, self.trainer)

    # --- model ---------------------------------------------------------------------------------------
    def encode(self, graph, edge_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Node states ``[N, H]`` from the message graph (optionally only the edges in ``edge_mask``)."""
        ei, et = graph.edge_index, graph.edge_type
        if edge_mask is not None:
            ei, et = ei[:, edge_mask], et[edge_mask]
        return self.model(graph.x, ei, et)

    def genre_scores(self, z: torch.Tensor, graph, tracks: torch.Tensor) -> torch.Tensor:
        """``[n, G]``: DistMult score of (track, has_genre, g) for every genre node g."""
        q = torch.stack([tracks, torch.full_like(tracks, HAS_GENRE), tracks], 1)  # tail is replaced
        return self.model.score_all(z, q, "tail", candidates=graph.genre_ids)

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
        scores = torch.cat([self.model.score(z, pos), self.model.score(z, neg)])
        labels = torch.cat(
            [torch.ones(len(pos), device=self.device), torch.zeros(len(neg), device=self.device)]
        )
        rel = torch.cat([pos[:, 1], neg[:, 1]])
        bce = F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
        R = hp.num_relations
        per_rel_sum = torch.zeros(R, device=self.device).index_add_(0, rel, bce)
        per_rel_n = torch.zeros(R, device=self.device).index_add_(0, rel, torch.ones_like(bce))
        present = per_rel_n > 0
        loss = (per_rel_sum[present] / per_rel_n[present]).mean() + hp.reg * self.model.regularization()
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        return loss

    def _evaluate(self, graph, stage: str) -> dict:
        z = self.encode(graph)
        triples = getattr(graph, f"{stage}_triples")
        ranks = []
        for side in ("head", "tail"):
            for i in range(0, triples.shape[0], self.hparams.eval_chunk):
                t = triples[i : i + self.hparams.eval_chunk]
                s = self.model.score_all(z, t, side)  # [e, N]
                ranks.append(
                    filtered_ranks(s, t, graph.known_keys, graph.num_nodes, self.hparams.num_relations, side)
                )
        if ranks:
            for name, v in ranking_metrics(torch.cat(ranks), HITS_AT).items():
                self.log(f"{stage}/{name}", v, batch_size=1)
        tracks, labels = getattr(graph, f"{stage}_tracks"), getattr(graph, f"{stage}_labels")
        logits = self.genre_scores(z, graph, tracks)  # [n, G]
        preds = logits.argmax(-1)
        self.metrics[stage].update(preds, labels)
        self.log_dict(self.metrics[stage], prog_bar=stage == "val", batch_size=1)
        return {"logits": logits, "preds": preds, "target": labels}  # for callbacks (confusion matrices)

    def validation_step(self, graph, batch_idx) -> dict:
        return self._evaluate(graph, "val")

    def test_step(self, graph, batch_idx) -> dict:
        return self._evaluate(graph, "test")
