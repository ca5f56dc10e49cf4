"""``Recommender``: the LightningModule of every recommendation model (MM-GNN and the baselines, issue 6).

The model is given as a callable of the training graph (``model(graph)``, a class_path with init_args
in YAML) and built in ``setup()`` from ``self.trainer.datamodule.graph`` (a `datamodules.recsys.RecGraph`
holding training edges only), so nothing the data knows (user/item counts, features) is in a config.

Training: BPR on the final scores, -log σ(ŷ_up - ŷ_un) (seed 002 §4.3, item 1), + the model's extra
terms (MM-GNN: λ1 · mutual learning, per-modality BPR) + λ2 · L2 of the batch's ego embeddings
(``reg_weight``, §5.3: λ2 = 1e-5); Adam with lr 1e-3 (§5.3).

Evaluation (../shared/notes/recsys-protocol.md): full ranking of all items for every user with target
items; the user's training items are masked with -inf, and at test time also the validation items.
Metrics: `audiognn.recsys_metrics.TopKMetrics` (P/R/NDCG at ``ks``), logged as ``val/recall@20`` etc.
Choose the checkpoint by a validation metric (ModelCheckpoint monitor), then test once. With a
cold-start split, the second test loader ranks only the cold items (all warm items masked: they
are not candidates for a new-item slate) and logs ``test_cold/...``.

Load a checkpoint: ``Recommender.load_from_checkpoint(path, model=...)`` builds nothing until it has a
datamodule; run it through ``trainer.test(model, datamodule=dm, ckpt_path=path)`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from audiognn.recsys_metrics import TopKMetrics, csr_rows_to_dense


class Recommender(L.LightningModule):
    def __init__(self, model: Callable[..., nn.Module], lr: float = 1e-3, optimizer: OptimizerCallable | None = None,
                 reg_weight: float = 1e-5, ks: Sequence[int] = (5, 10, 20, 50)):
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer"])
        self.model_factory = None if isinstance(model, nn.Module) else model
        self.lr = lr  # seed 002 §5.3: Adam, learning rate 0.001 (used when no optimizer callable is given)
        self.optimizer_fn = optimizer
        self.reg_weight = reg_weight
        self.model: nn.Module | None = model if isinstance(model, nn.Module) else None
        self.metrics = nn.ModuleDict({s: TopKMetrics(ks) for s in ("val", "test", "test_cold")})
        self._eval_cache = None

    # -- building -------------------------------------------------------------------------------------
    def build(self, datamodule) -> None:
        """Build the model from the datamodule's training graph and keep its split CSRs for evaluation."""
        datamodule.setup("fit")
        if self.model is None:
            self.model = self.model_factory(datamodule.graph)
        self.num_items = datamodule.graph.num_items
        for name in ("train", "val", "test", "cold"):
            indptr, indices = datamodule.csr(name)
            self.register_buffer(f"{name}_indptr", indptr, persistent=False)
            self.register_buffer(f"{name}_indices", indices, persistent=False)
        cold = torch.zeros(self.num_items, dtype=torch.bool)
        cold[datamodule.csr("cold")[1]] = True
        self.register_buffer("cold_items", cold, persistent=False)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "csr"):
            raise RuntimeError("Recommender needs a RecDataModule: trainer.fit(model, datamodule=RecDataModule(...))")
        if not hasattr(self, "train_indptr"):
            self.build(dm)

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
        return self.optimizer_fn(params) if self.optimizer_fn is not None else torch.optim.Adam(params, lr=self.lr)

    # -- evaluation -----------------------------------------------------------------------------------
    def _rows(self, split: str, users: torch.Tensor) -> torch.Tensor:  # [B, I] bool
        return csr_rows_to_dense(getattr(self, f"{split}_indptr"), getattr(self, f"{split}_indices"), users,
                                 self.num_items)

    @torch.no_grad()
    def scores(self, users: torch.Tensor, stage: str) -> torch.Tensor:
        """Masked full-ranking scores ``[B, I]`` for ``stage`` in val / test / test_cold."""
        if self._eval_cache is None:
            self._eval_cache = self.model()
        s = self.model.score_all(self._eval_cache, users).float()  # [B, I]
        s = s.masked_fill(self._rows("train", users), float("-inf"))
        if stage in ("test", "test_cold"):
            s = s.masked_fill(self._rows("val", users), float("-inf"))
        if stage == "test_cold":
            s = s.masked_fill(~self.cold_items, float("-inf"))
        return s

    def _eval_step(self, users, stage):
        target = {"val": "val", "test": "test", "test_cold": "cold"}[stage]
        self.metrics[stage].update(self.scores(users, stage), self._rows(target, users))

    def _eval_end(self, stages):
        self._eval_cache = None
        for stage in stages:
            m = self.metrics[stage]
            if stage == "test_cold" and not bool(self.cold_items.any()):
                continue  # no cold-start split (the same on every rank)
            vals = m.compute()
            self.log_dict({f"{stage}/{k}": v for k, v in vals.items()}, sync_dist=False)
            self._reset(stage)

    def _reset(self, *stages):
        # Lightning runs validate/test under inference_mode; states re-created there would be inference
        # tensors that a later validation inside fit (no_grad only) cannot update in place.
        with torch.inference_mode(False):
            for stage in stages:
                self.metrics[stage].reset()

    def on_validation_epoch_start(self):
        self._eval_cache = None
        self._reset("val")

    def validation_step(self, users, batch_idx):
        self._eval_step(users, "val")

    def on_validation_epoch_end(self):
        self._eval_end(["val"])

    def on_test_epoch_start(self):
        self._eval_cache = None
        self._reset("test", "test_cold")

    def test_step(self, users, batch_idx, dataloader_idx=0):
        self._eval_step(users, "test" if dataloader_idx == 0 else "test_cold")

    def on_test_epoch_end(self):
        self._eval_end(["test", "test_cold"])

    def on_train_epoch_start(self):
        self._eval_cache = None
