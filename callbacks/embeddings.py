"""Write per-clip embeddings from any trained audio model during ``predict``.

    python train.py predict --config RUN_CONFIG.yaml --ckpt_path last.ckpt \
        --trainer.callbacks+=callbacks.embeddings.EmbeddingWriter \
        --trainer.callbacks.output audio_emb.npz \
        --data.init_args.test_splits '[train, val, test]'        # every clip of the shard set
    (or --data.init_args.predict_files '[a.wav, b.wav]' for loose files: keys are the paths)

The file is the recommender's modality format (``audiognn.data.modality_file``: ``keys`` [N], ``emb`` [N, D]), read by
``RecDataModule(modality_files={"audio": "audio_emb.npz"})``: its keys must be the recommender's item ids
(name the clips by item id when preparing them, e.g. ``<song_id>.wav``). The embedding is the backbone's
``embed(x)`` on the normalised log-mel: the module's ``backbone`` must be an
:class:`~audiognn.models.base.AudioBackbone` (LHGNN, CNN, RNN, GenreGNN are). Under DDP each rank writes
``<output stem>.rank<r>.npz``; pass them all to ``RecDataModule`` or concatenate them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from audiognn.data.modality_file import write_modality
from audiognn.models.base import AudioBackbone


class EmbeddingWriter(BasePredictionWriter):
    """Writes ``backbone.embed(x)`` of every predicted clip to ``output`` (keys + embeddings, see above).

    Args:
        output: the ``.npz`` file (per rank under DDP). (default: ``"embeddings.npz"``)
    """

    def __init__(self, output: str = "embeddings.npz"):
        super().__init__(write_interval="batch")
        self.output = output
        self.keys: list[str] = []
        self.embs: list[torch.Tensor] = []

    def on_predict_start(self, trainer, pl_module) -> None:
        backbone = getattr(pl_module, "backbone", None)
        if not isinstance(backbone, AudioBackbone):
            raise TypeError(f"{type(backbone).__name__} is not an AudioBackbone: no embed(x) to write embeddings with")
        self.keys, self.embs = [], []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        emb = pl_module.backbone.embed(batch["x"])  # [B, D] on the normalised log-mel
        self.keys.extend(str(k) for k in batch["key"])
        self.embs.append(emb.detach().float().cpu())

    def path(self, trainer) -> Path:
        out = Path(self.output)
        return out if trainer.world_size == 1 else out.with_name(f"{out.stem}.rank{trainer.global_rank}{out.suffix}")

    def on_predict_end(self, trainer, pl_module) -> None:
        if not self.embs:
            return
        path = self.path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_modality(path, self.keys, torch.cat(self.embs).numpy())
