"""``Recommender``: the LightningModule of every recommendation model (MM-GNN and the baselines).

The model is given as a callable of the training graph (``model(rec_graph)``: a class_path with init_args in
YAML) and built in ``__init__`` from ``rec_graph`` (an `audiognn.data.recgraph.RecGraph`, training edges only),
which ``train.py`` links from the DataModule (``LINKED_FROM_DATA``): nothing the data knows (user/item counts,
features) is in a config.

Training (Ziaoddini, *Socially Aware Music Recommendation: a Multi-Modal GNN*, §4.3 and §5.3): BPR on the final
scores, -log σ(ŷ_up - ŷ_un), + the model's extra terms (MM-GNN: λ1 · mutual learning, per-modality BPR) + λ2 ·
L2 of the batch's ego embeddings (``reg_weight``, §5.3: λ2 = 1e-5); Adam with lr 1e-3 (§5.3), a constant rate
unless a ``scheduler`` is given (`audiognn.tasks.optim`).

Evaluation protocol (full ranking, as LightGCN, MMRec and RecBole's full sort):

- every item is scored for each evaluated user; the user's training items are masked with -inf (not a small
  constant, which would let masked items outrank items with negative scores), and at test time also the
  validation items; the evaluation batches carry these masks and the targets (``datamodules.recsys``);
- Precision@K = hits / K, Recall@K = hits / |target items of the user|, NDCG@K with the ideal DCG over
  min(K, |targets|), averaged over the users that have targets, K in ``ks`` (`audiognn.recsys_metrics`), logged
  as ``val/recall@20`` etc.;
- the validation split chooses the epoch (ModelCheckpoint monitor); the test split is read once, at the end;
- the propagation graph holds training edges only; BPR draws one negative per positive, rejected against the
  user's positives;
- cold-start items (no training interaction) are their own split: the second test loader ranks only them (warm
  items are not candidates for a new-item slate) and logs ``test_cold/...``.

Checkpoints: the model's graph is in its state dict and ``hparams`` hold only its sizes (``rec_graph`` as
`RecGraph.describe`) and the model's class_path with init_args, so ``Recommender.load_from_checkpoint(path)``
needs no data (a model given as a ready ``nn.Module`` needs ``model=`` again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from audiognn.checkpoint import build_from_spec, callable_spec
from audiognn.data.recgraph import RecGraph
from audiognn.models.recsys_base import RecModel
from audiognn.recsys_metrics import TopKMetrics, mask_pairs_, rank_top_items
from audiognn.tasks.optim import configure_schedule

STAGES = ("val", "test", "test_cold")


class RecEmbeddings(NamedTuple):
    """What `Recommender.embeddings` returns: final user ``[U, d]`` and item ``[I, d]`` embeddings and the
    ``[2, E]`` (user, item) training pairs the model was built from."""

    user: torch.Tensor
    item: torch.Tensor
    interactions: torch.Tensor


class Recommender(L.LightningModule):
    """BPR training and full-ranking evaluation of a recommendation model (see the module docstring).

    Args:
        model: a callable building a `RecModel` from a `RecGraph` (a class or ``functools.partial``; from a
            config, a class_path with init_args), a ready `RecModel`, or a ``{"class_path", "init_args"}`` dict
            (what the checkpoint's hparams hold).
        rec_graph: the training graph, linked from ``RecDataModule.rec_graph``; or its `RecGraph.describe` dict
            (from a checkpoint: the model is then built with the right sizes and its state dict fills it).
        optimizer: optimiser callable. (default: ``torch.optim.Adam``, lr 1e-3 as §5.3)
        scheduler: learning-rate schedule callable or None (constant). (default: ``None``)
        reg_weight: λ2 of the L2 term (§5.3). (default: ``1e-5``)
        ks: cut-offs K of the metrics. (default: ``(5, 10, 20, 50)``)
    """

    def __init__(self, model: Callable[[RecGraph], RecModel] | RecModel | dict,
                 rec_graph: RecGraph | dict | None = None, optimizer: OptimizerCallable = torch.optim.Adam,
                 scheduler: LRSchedulerCallable | None = None, reg_weight: float = 1e-5,
                 ks: Sequence[int] = (5, 10, 20, 50)):
        super().__init__()
        self.save_hyperparameters(ignore=["model", "rec_graph", "optimizer", "scheduler"])
        for key in ("_instantiator", "_class_path"):  # load_from_checkpoint calls Recommender(**hparams) itself
            self.hparams.pop(key, None)
        if isinstance(model, nn.Module):
            self.model = model
        else:
            if rec_graph is None:
                raise ValueError("Recommender: rec_graph is needed to build the model (train.py links it from "
                                 "the DataModule; in Python pass rec_graph=datamodule.rec_graph)")
            graph = rec_graph if isinstance(rec_graph, RecGraph) else RecGraph.placeholder(rec_graph)
            self.model = build_from_spec(model, graph)
            if not isinstance(self.model, RecModel):
                raise TypeError(f"Recommender: the model must be a RecModel, got {type(self.model).__name__}")
        self.hparams["model"] = None if isinstance(model, nn.Module) else callable_spec(model)
        self.hparams["rec_graph"] = rec_graph.describe() if isinstance(rec_graph, RecGraph) else rec_graph
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.reg_weight = reg_weight
        self.metrics = nn.ModuleDict({s: TopKMetrics(ks) for s in STAGES})
        self._eval_cache = None

    # -- training -------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        if not getattr(self.model, "trainable", True):
            return None
        users, pos, neg = batch  # [B] each
        out = self.model()
        s_pos, s_neg = self.model.score(out, users, pos), self.model.score(out, users, neg)
        bpr = F.softplus(s_neg - s_pos).mean()  # -log σ(ŷ_up - ŷ_un)
        reg = self.reg_weight * self.model.reg_loss(users, pos, neg).to(bpr.device)
        aux = self.model.aux_losses(out, users, pos, neg)
        loss = bpr + reg + sum(aux.values())
        bs = len(users)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/bpr", bpr, batch_size=bs)
        for k, v in aux.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        return configure_schedule(self.optimizer_fn(params), self.scheduler_fn, self.trainer)

    # -- scores ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def score_users(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Unmasked scores ``[B, C]`` of ``items`` ``[C]`` (default: every item) for ``users`` ``[B]`` (one full
        forward per evaluation)."""
        if self._eval_cache is None:
            self._eval_cache = self.model()
        return self.model.score_all(self._eval_cache, users, items).float()

    def rank_scores(self, batch: dict) -> torch.Tensor:
        """Masked scores ``[B, I]`` of an evaluation batch (``users``, ``exclude`` pairs set to -inf, items
        outside ``candidates`` set to -inf when the batch has them)."""
        s = mask_pairs_(self.score_users(batch["users"]), batch["exclude"])  # a fresh [B, I] tensor
        if "candidates" in batch:
            s = s.masked_fill(~batch["candidates"], float("-inf"))
        return s

    @torch.no_grad()
    def embeddings(self) -> RecEmbeddings:
        """Final user and item embeddings (evaluation mode) and the training pairs: what plots need."""
        was_training = self.model.training
        self.model.eval()
        user, item = self.model.user_item_embeddings()
        self.model.train(was_training)
        return RecEmbeddings(user, item, self.model.graph.train_edge_index)

    # -- evaluation -----------------------------------------------------------------------------------
    def _eval_step(self, batch, stage):
        """`rank_scores`'s ranking without its ``[B, I]`` matrix: the users with targets are scored a cache-sized
        chunk at a time, over the candidate items only when the batch has them (`rank_top_items`)."""
        metric, users, target = self.metrics[stage], batch["users"], batch["target"]
        if self._eval_cache is None:  # before the chunks, which may be scored in parallel threads
            self._eval_cache = self.model()
        items = batch["candidates"].nonzero().squeeze(1) if "candidates" in batch else None
        n_items = self.model.num_items
        rows = metric.target_rows(target, len(users))
        top = rank_top_items(lambda r: self.score_users(users[r], items), rows,
                             min(metric.kmax(n_items), n_items if items is None else len(items)),
                             batch["exclude"], columns=items)
        metric.update_ranked(top, rows, target, n_items)

    def _eval_end(self, stages):
        self._eval_cache = None
        for stage in stages:
            vals = self.metrics[stage].compute()
            self.log_dict({f"{stage}/{k}": v for k, v in vals.items()}, sync_dist=False)
            self._reset(stage)

    def _reset(self, *stages):
        # Lightning runs validate/test under inference_mode; states re-created there would be inference
        # tensors that a later validation inside fit (no_grad only) cannot update in place.
        with torch.inference_mode(False):
            for stage in stages:
                self.metrics[stage].reset()

    def on_train_epoch_start(self):
        self._eval_cache = None

    def on_validation_epoch_start(self):
        self._eval_cache = None
        self._reset("val")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        self._eval_end(["val"])

    def on_test_epoch_start(self):
        self._eval_cache = None
        self._reset("test", "test_cold")

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self._eval_step(batch, "test" if dataloader_idx == 0 else "test_cold")

    def on_test_epoch_end(self):
        # the cold-start loader exists on every rank or on none (a rank may hold none of its users)
        self._eval_end(["test", "test_cold"] if len(self.trainer.num_test_batches) > 1 else ["test"])

