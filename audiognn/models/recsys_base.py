"""The contract of every recommendation model (MM-GNN and the baselines) and the graph each one carries.

A model is a plain ``nn.Module`` built from an `audiognn.data.recgraph.RecGraph` (training edges only) and
used by `audiognn.tasks.recommender.Recommender` through:

- ``forward() -> RecOutput``: final user ``[U, d]`` and item ``[I, d]`` representations (full graph);
- ``score(out, users [B], items [B]) -> [B]`` and ``score_all(out, users [B], items [C] = all) -> [B, C]``;
- ``aux_losses(out, users, pos, neg) -> dict`` of extra, already weighted loss terms (MM-GNN);
- ``reg_loss(users, pos, neg)``: 0.5 · squared L2 norm of the batch's ego (layer-0) parameter rows / B, plus
  0.5 · the squared L2 norm of the model's `RecModel.dense_parameters` (shared weights that every example
  uses: MM-GNN's fusion, projections and gates), multiplied by λ2 in the Recommender (Ziaoddini, *Socially Aware
  Music Recommendation: a Multi-Modal GNN*, §5.3);
- ``trainable``: False for a model without parameters to fit (MostPop).

Every model keeps the graph it was built from in `GraphBuffers` (persistent buffers, so the graph travels in
the state dict) and derives what it propagates over (normalised adjacencies, feature matrices) in ``build``,
again after a state dict is loaded: a model built from `RecGraph.placeholder` of the same sizes and given a
checkpoint's state dict is the model that was saved, without the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from audiognn.data.recgraph import RecGraph


@dataclass
class RecOutput:
    """Final representations of one full forward pass: user ``[U, d]``, item ``[I, d]``, model-specific extras."""

    user: torch.Tensor
    item: torch.Tensor
    extra: dict = field(default_factory=dict)


class GraphBuffers(nn.Module):
    """A `RecGraph` as persistent buffers: the training pairs always, the rest as a model asks.

    Args:
        graph (RecGraph): the training graph.
        social (bool, optional): keep the friendship edges. (default: ``False``)
        modalities (list[str], optional): item modalities to keep. (default: ``()``)
        emotion (bool, optional): keep the item emotion vectors (when the graph has them). (default: ``False``)
    """

    def __init__(self, graph: RecGraph, social: bool = False, modalities=(), emotion: bool = False):
        super().__init__()
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.register_buffer("train_edge_index", graph.train_edge_index.long().clone())  # [2, E]
        self.social = social
        if social:
            self.register_buffer("social_edge_index", graph.social_edge_index.long().clone())  # [2, S]
        self.modality_names = list(modalities)
        for m in self.modality_names:
            f, present = graph.modalities[m]
            self.register_buffer(f"feat_{m}", f.float().clone())  # [I, D_m]
            self.register_buffer(f"present_{m}", present.bool().clone())  # [I]
        self.has_emotion = emotion and graph.emotion is not None
        if self.has_emotion:
            self.register_buffer("emotion", graph.emotion[0].float().clone())  # [I, D_e]
            self.register_buffer("emotion_present", graph.emotion[1].bool().clone())  # [I]

    def modality(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features ``[I, D]``, present ``[I]``) of a kept modality."""
        return getattr(self, f"feat_{name}"), getattr(self, f"present_{name}")

    def to_graph(self) -> RecGraph:
        """The kept parts as a `RecGraph` (parts not kept are empty)."""
        social = self.social_edge_index if self.social else self.train_edge_index.new_zeros(2, 0)
        return RecGraph(self.num_users, self.num_items, self.train_edge_index, social,
                        {m: self.modality(m) for m in self.modality_names},
                        (self.emotion, self.emotion_present) if self.has_emotion else None)


class RecModel(nn.Module):
    """Base of the recommendation models: the shared contract (see the module docstring).

    Args:
        graph (RecGraph): the training graph.
        social, modalities, emotion: the parts of ``graph`` the model keeps besides its training pairs
            (see `GraphBuffers`).
    """

    trainable = True

    def __init__(self, graph: RecGraph, social: bool = False, modalities=(), emotion: bool = False):
        super().__init__()
        self.num_users, self.num_items = graph.num_users, graph.num_items
        self.graph = GraphBuffers(graph, social, modalities, emotion)
        self.register_load_state_dict_post_hook(_rebuild_after_load)

    def build(self, graph: RecGraph) -> None:
        """(Re)compute the derived, non-persistent buffers from ``graph``; called by subclasses at the end of
        ``__init__`` and after every ``load_state_dict``."""

    def score(self, out: RecOutput, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # [B]
        return (out.user[users] * out.item[items]).sum(-1)

    def score_all(self, out: RecOutput, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, C]`` of ``users`` ``[B]`` for ``items`` ``[C]`` (default: all ``I`` items)."""
        return out.user[users] @ (out.item if items is None else out.item[items]).T

    def aux_losses(self, out: RecOutput, users, pos, neg) -> dict[str, torch.Tensor]:
        return {}

    def ego_rows(self, users, pos, neg) -> list[torch.Tensor]:
        """The layer-0 parameter rows of a batch, regularised by `reg_loss`."""
        return []

    def dense_parameters(self) -> list[torch.Tensor]:
        """Shared (non-embedding) parameters regularised in full at every batch by `reg_loss` (default: none)."""
        return []

    def reg_loss(self, users, pos, neg) -> torch.Tensor:
        rows, dense = self.ego_rows(users, pos, neg), self.dense_parameters()
        if not rows and not dense:
            return torch.zeros(())
        return 0.5 * (sum(r.pow(2).sum() for r in rows) / len(users) + sum(p.pow(2).sum() for p in dense))

    def user_item_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user ``[U, d]`` and item ``[I, d]`` embeddings (plots: t-SNE of songs, user clusters)."""
        out = self()
        return out.user, out.item


def _rebuild_after_load(module: RecModel, incompatible_keys) -> None:
    module.build(module.graph.to_graph())
