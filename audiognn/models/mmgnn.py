r"""MM-GNN, from Ziaoddini, *Socially Aware Music Recommendation: a Multi-Modal GNN* (§4.2-4.3, eqs. 2-6).

For each modality m (text/lyrics, audio, visual, ... — whatever `RecGraph.modalities` holds — and, by default,
an item-ID pseudo-modality) an independent LightGCN-style GNN propagates over the user-song training graph
(eq. 2) with layer weights 1/(l+1). A social GNN does the same over the friendship graph (eq. 3). Users are
fused (eq. 4), songs are a weighted sum (eq. 5), and the score is their inner product.

Loss (in `MMGNN.aux_losses`; BPR on ŷ and λ2 L2 are added by the Recommender): λ1 · L_ML (eq. 6, symmetric KL
between the modalities' softened score distributions, λ1 = 0.5, §5.3) + a BPR loss per modality (Fig. 1's
L_lyrics, L_audio, L_visual; weight ``modality_bpr_weight``).

Where the paper is vague, and what we chose:

- Item input of a feature modality: Linear(D_m → d) of the pre-extracted feature (eq. 1); an item *missing* the
  modality gets a learned per-modality "missing" vector instead, so every item has a finite embedding and
  propagation fills it from its listeners. A modality absent for every item is dropped from the model (it
  carries no information; a warning says so).
- Users start from per-modality ID embeddings (the paper's "initial user embeddings e_u"); songs may also have
  an ID pseudo-modality (``use_id_modality``): with audio and images absent (Last.fm 2K) the tag text alone
  covers 69% of the artists, and every GNN recommender of the paper's Table 2 has ID embeddings. The paper's
  song inputs are content only (§4.2.1); an item without a training interaction (a cold item, or an artist
  whose few plays all fell into validation or test: 12.8% of the test pairs of Last.fm 2K's 8:1:1 split)
  has no identity to learn, and its ID embedding is only ever pushed away from users as a BPR negative.
  ``unseen_item_ids="zero"`` gives such items no ID input, so their content alone represents them.
- AGGREGATE of eqs. 2-3 is the symmetric normalised sum :math:`\hat{A}` of LightGCN.
- σ in eq. 4 is not named: ``user_activation`` (default "tanh"; "identity", "sigmoid", "leaky_relu").
- α, β, γ of eq. 5 are learnable scalars initialised to 1/M.
- "Softened prediction probability distribution" (eq. 6): for each user of the batch, a softmax with temperature
  ``temperature`` over the scores of ``ml_candidates`` candidate items shared by the batch (the first C/2
  positives and negatives of the shuffled batch; all 2B cost O(B²) and dominated the step time); items missing
  either modality of a pair are excluded from that pair's distributions. L_ML = Σ_{m1<m2} KL(P1‖P2) + KL(P2‖P1),
  averaged over users, times T² (Hinton et al.).
- Emotion-aware embeddings (§3.3, no equation): an item's emotion vector is projected to d and added through a
  sigmoid gate g = σ(W_g [e_i ⊕ h_i]); a user's emotion profile is the mean over their training songs and, for
  community emotion, their friends' profiles, gated into e_u the same way.

Departures from §4.3 and choices measured on Last.fm 2K (equal epochs; the figures are in the README's
recommendation section, ``bench/recsys_lastfm.py --screen``):

- Per-modality BPR terms (``modality_bpr_weight``, default 4): §4.3 lists only BPR on the final score, L_ML and
  L2; Fig. 1 draws L_lyrics, L_audio, L_visual, with no weight. Kept because without them training is much
  slower, and weighted 4 because, at equal epochs (15; one seed per weight, then 3 seeds at 4), Recall@50 rose
  with the weight: 0 → 0.3266, 1 → 0.3610, 2 → 0.3638, 4 → 0.3693 (seed 0), 0.3726 ± 0.0026 over 3 seeds
  against 0.3636 ± 0.0022 at weight 1, every other metric higher too. The weight scales the gradient that
  reaches each modality's own embeddings; no model had converged at 15 epochs (every best validation epoch is
  the last), so part of the gain may be faster learning: weights above 4 and longer training were not measured.
- Initialisation (``init``): "pytorch" (default) keeps PyTorch's Linear initialisation of W_u, the projections
  and the gates (the bias of W_u dominates at the start and the text projection is ~8x the ID scale);
  "balanced" starts W_u as the mean of its parts with zero biases and every projection at ``init_std``. The
  balanced start was measured *below* the PyTorch one at equal epochs, so it is an option, not the default.
- Layer weights (``layer_weights``): eq. 2's 1/(l+1) ("paper", default) or the same divided by their sum
  ("normalised").
- L2 (``reg_dense``): λ2 covers the batch's ego embeddings (LightGCN's convention); ``reg_dense=True`` adds
  0.5 λ2 ‖θ‖² of every other parameter (W_u, projections, missing vectors, gates, α) at each batch — at
  λ2 = 1e-5 it changed little and is off by default.
- Measured and left at the first choice (one seed, weight 1, Recall@50 against 0.3610): σ = identity (0.3607),
  the softening temperature T = 2 or 4 (0.3599, 0.3589; every metric lower), 1024 instead of 256 candidates
  per distribution (0.3590), α, β, γ initialised to 1 instead of 1/M (0.3576), and no ID input for items without
  a training interaction (``unseen_item_ids="zero"``; on the cold-item split Recall@20 among cold items
  0.2043 against 0.2316: the learned ID vectors of unseen items, trained only as BPR negatives and
  mutual-learning candidates, still rank cold items above chance, R@20 0.07 alone against about 0.01).
- Cold items: weight 4 ranks them worse than weight 1 (Recall@20 among cold items 0.1877 ± 0.0161 against
  0.2252 ± 0.0079, 3 seeds each); VBPR's separate content factor θ_u·E f_i does far better (0.3828), and
  eqs. 4-5 have no equivalent (the README's recommendation section).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from audiognn.data.recgraph import RecGraph, row_mean_adjacency
from audiognn.graph.sparse_propagation import light_propagate
from audiognn.models.recsys_base import RecModel, RecOutput

log = logging.getLogger(__name__)

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda x: x,
               "leaky_relu": lambda x: F.leaky_relu(x, 0.2)}


def mutual_learning_loss(scores: list[torch.Tensor], valid: list[torch.Tensor] | None = None,
                         temperature: float = 1.0) -> torch.Tensor:
    r"""Deep mutual learning between modalities (Ziaoddini, eq. 6), over unordered pairs counted both ways:

    .. math::
        \mathcal{L}_{ML} = T^2 \sum_{m_1 < m_2} \mathrm{KL}(P_{m_1} \| P_{m_2}) + \mathrm{KL}(P_{m_2} \| P_{m_1}),
        \qquad P_m = \mathrm{softmax}(s_m / T)

    averaged over the B users; candidates invalid in either modality of a pair are left out of that pair's
    distributions. 0 when all modalities give the same distributions, > 0 otherwise.

    Args:
        scores (list[torch.Tensor]): M per-modality scores of C candidate items per user.
        valid (list[torch.Tensor], optional): M bool masks (candidate present in modality m). (default: ``None``)
        temperature (float, optional): T. (default: ``1.0``)

    Shapes:
        - **input:** scores M × ``[B, C]``, valid M × ``[B, C]`` or ``[C]``
        - **output:** scalar
    """
    total = scores[0].new_zeros(())
    for a in range(len(scores)):
        for b in range(a + 1, len(scores)):
            ok = torch.ones_like(scores[a], dtype=torch.bool)
            if valid is not None:
                ok = ok & valid[a] & valid[b]
            fill = torch.finfo(scores[a].dtype).min / 4
            la = F.log_softmax(scores[a].masked_fill(~ok, fill) / temperature, dim=1)  # [B, C]
            lb = F.log_softmax(scores[b].masked_fill(~ok, fill) / temperature, dim=1)
            pa, pb = la.exp() * ok, lb.exp() * ok
            kl = (pa * (la - lb)).sum(1) + (pb * (lb - la)).sum(1)  # [B] KL(a‖b) + KL(b‖a)
            total = total + kl.mean() * temperature**2
    return total


class _Gate(nn.Module):
    """x + σ(W_g [x ⊕ h]) ⊙ h (emotion gate)."""

    def __init__(self, d: int):
        super().__init__()
        self.lin = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x + torch.sigmoid(self.lin(torch.cat([x, h], -1))) * h


class MMGNN(RecModel):
    r"""MM-GNN, from Ziaoddini, *Socially Aware Music Recommendation: a Multi-Modal GNN* (see the module
    docstring for the choices where the paper is vague).

    Per modality m (eq. 2) and on the friendship graph (eq. 3), with :math:`\hat{A}` the normalised adjacency:

    .. math::
        e_{\cdot,m} = \sum_{l=0}^{L} \frac{1}{l+1} \hat{A}^l e^{(0)}_{\cdot,m}, \qquad
        e_{u,soc} = \sum_{l=0}^{L_s} \frac{1}{l+1} \hat{A}_{soc}^l e^{(0)}_{u,soc}

    fused (eqs. 4-5) and scored:

    .. math::
        e_u = \sigma\big(W_u [e_{u,m_1} \oplus \dots \oplus e_{u,m_M} \oplus e_{u,soc}]\big), \qquad
        e_i = \sum_m \alpha_m e_{i,m}, \qquad \hat{y}_{ui} = e_u^\top e_i

    with emotion gates on :math:`e_i` and :math:`e_u` (§3.3) and the mutual-learning loss of eq. 6
    (`mutual_learning_loss`) in `aux_losses`.

    Args:
        graph (RecGraph): the training graph with item modalities, friendships and emotion vectors.
        embedding_dim (int, optional): d (§5.3: 64). (default: ``64``)
        num_layers (int, optional): L of the modality GNNs. (default: ``3``)
        social_layers (int, optional): :math:`L_s` of the social GNN. (default: ``2``)
        modalities (list[str], optional): modalities of the graph to use, plus ``"id"``; ``None``: all present
            ones. (default: ``None``)
        use_id_modality (bool, optional): the item-ID pseudo-modality. (default: ``True``)
        use_social (bool, optional): the social GNN (ablation "w/o Social"). (default: ``True``)
        use_emotion (bool, optional): the emotion gates (ablation "w/o Emotion"). (default: ``True``)
        mutual_learning (bool, optional): :math:`\mathcal{L}_{ML}` (ablation "w/o Mutual Learning").
            (default: ``True``)
        mutual_weight (float, optional): λ1 (§5.3: 0.5). (default: ``0.5``)
        temperature (float, optional): T of the softened distributions. (default: ``1.0``)
        ml_candidates (int, optional): C, items per softened distribution. (default: ``256``)
        modality_bpr_weight (float, optional): weight of the per-modality BPR losses (see the module
            docstring). (default: ``4.0``)
        user_activation (str, optional): σ of eq. 4: "tanh", "sigmoid", "identity" or "leaky_relu".
            (default: ``"tanh"``)
        init_std (float, optional): standard deviation of the normal initialisation. (default: ``0.1``)
        init (str, optional): "pytorch" or "balanced" initialisation of W_u, projections and gates (see the
            module docstring). (default: ``"pytorch"``)
        layer_weights (str, optional): "paper" (1/(l+1), eqs. 2-3) or "normalised" (summing to 1).
            (default: ``"paper"``)
        reg_dense (bool, optional): λ2 also on W_u, projections, missing vectors, gates and α.
            (default: ``False``)
        alpha_init (float, optional): initial α, β, γ of eq. 5; ``None``: 1/M. (default: ``None``)
        unseen_item_ids (str, optional): "learned" (every item has a learned ID embedding) or "zero" (items
            without a training interaction have none: only their content represents them). (default:
            ``"learned"``)

    Shapes:
        - **output:** user ``[U, d]``, item ``[I, d]``; ``extra["users"][m]`` ``[U, d]`` and
          ``extra["items"][m]`` ``[I, d]`` per modality m
    """

    def __init__(self, graph: RecGraph, embedding_dim: int = 64, num_layers: int = 3, social_layers: int = 2,
                 modalities: list[str] | None = None, use_id_modality: bool = True, use_social: bool = True,
                 use_emotion: bool = True, mutual_learning: bool = True, mutual_weight: float = 0.5,
                 temperature: float = 1.0, ml_candidates: int = 256, modality_bpr_weight: float = 4.0,
                 user_activation: str = "tanh", init_std: float = 0.1, init: str = "pytorch",
                 layer_weights: str = "paper", reg_dense: bool = False, alpha_init: float | None = None,
                 unseen_item_ids: str = "learned"):
        wanted = list(graph.modalities) if modalities is None else [m for m in modalities if m != "id"]
        unknown = set(wanted) - set(graph.modalities)
        if unknown:
            raise ValueError(f"MMGNN: modalities {sorted(unknown)} are not in the data "
                             f"(available: {sorted(graph.modalities)} and 'id')")
        if user_activation not in ACTIVATIONS:
            raise ValueError(f"MMGNN: user_activation must be one of {sorted(ACTIVATIONS)}, got {user_activation!r}")
        if unseen_item_ids not in ("learned", "zero"):
            raise ValueError(f"MMGNN: unseen_item_ids must be 'learned' or 'zero', got {unseen_item_ids!r}")
        if init not in ("balanced", "pytorch") or layer_weights not in ("paper", "normalised"):
            raise ValueError(f"MMGNN: init must be 'balanced' or 'pytorch' (got {init!r}), layer_weights 'paper' "
                             f"or 'normalised' (got {layer_weights!r})")
        feature_names = []
        for m in wanted:
            if not bool(graph.modalities[m][1].any()):
                log.warning("MMGNN: modality %r is missing for every item; it is left out of the model", m)
                continue
            feature_names.append(m)
        social = use_social and graph.social_edge_index.numel() > 0
        if use_social and not social:
            log.warning("MMGNN: use_social=True but the data has no social edges; social GNN disabled")
        emotion = use_emotion and graph.emotion is not None and bool(graph.emotion[1].any())
        super().__init__(graph, social=social, modalities=feature_names, emotion=emotion)
        d = embedding_dim
        self.num_layers, self.social_layers = num_layers, social_layers
        self.mutual_learning, self.mutual_weight, self.temperature = mutual_learning, mutual_weight, temperature
        self.modality_bpr_weight, self.ml_candidates = modality_bpr_weight, ml_candidates
        self.layer_weights, self.reg_dense, self.unseen_item_ids = layer_weights, reg_dense, unseen_item_ids
        self.use_social, self.use_emotion, self.feature_names = social, emotion, feature_names
        use_id = use_id_modality and (modalities is None or "id" in modalities)
        self.names = (["id"] if use_id else []) + self.feature_names
        if not self.names:
            raise ValueError("MMGNN: no modality left (enable use_id_modality or give a present modality)")
        self.user_emb = nn.ModuleDict({_k(m): nn.Embedding(self.num_users, d) for m in self.names})
        if use_id:
            self.item_id = nn.Embedding(self.num_items, d)
            nn.init.normal_(self.item_id.weight, std=init_std)
        self.proj = nn.ModuleDict()
        self.missing = nn.ParameterDict()
        for m in self.feature_names:
            self.proj[_k(m)] = nn.Linear(graph.modalities[m][0].shape[1], d)
            self.missing[_k(m)] = nn.Parameter(torch.randn(d) * init_std)
        for e in self.user_emb.values():
            nn.init.normal_(e.weight, std=init_std)
        n_user_parts = len(self.names)
        if self.use_social:  # social GNN (eq. 3)
            self.social_emb = nn.Embedding(self.num_users, d)
            nn.init.normal_(self.social_emb.weight, std=init_std)
            n_user_parts += 1
        self.fuse = nn.Linear(n_user_parts * d, d)  # W_u, eq. 4
        self.user_activation = user_activation
        a0 = 1.0 / len(self.names) if alpha_init is None else alpha_init
        self.alpha = nn.Parameter(torch.full((len(self.names),), a0))  # α, β, γ of eq. 5
        if self.use_emotion:  # §3.3
            self.emo_proj = nn.Linear(graph.emotion[0].shape[1], d, bias=False)
            self.item_gate, self.user_gate = _Gate(d), _Gate(d)
        if init == "balanced":
            self._balanced_init(graph, init_std)
        self.build(graph)

    @torch.no_grad()
    def _balanced_init(self, graph: RecGraph, init_std: float) -> None:
        """Every layer-0 input at the scale of the ID embeddings and a fusion that starts as the mean of its parts
        (see the module docstring): W_u = [I ... I] / parts, zero biases; projections N(0, (init_std / r)²) with
        r the mean norm of the present feature rows; the emotion projection N(0, init_std²)."""
        d = self.fuse.out_features
        parts = self.fuse.in_features // d
        self.fuse.weight.copy_(torch.eye(d).repeat(1, parts) / parts)
        self.fuse.bias.zero_()
        for m in self.feature_names:
            feats, present = graph.modalities[m]
            r = float(feats[present].float().norm(dim=1).mean()) if bool(present.any()) else 1.0
            nn.init.normal_(self.proj[_k(m)].weight, std=init_std / max(r, 1e-8))
            nn.init.zeros_(self.proj[_k(m)].bias)
        if self.use_emotion:
            nn.init.normal_(self.emo_proj.weight, std=init_std)
            for gate in (self.item_gate, self.user_gate):
                nn.init.zeros_(gate.lin.bias)

    def build(self, graph: RecGraph) -> None:
        self.register_buffer("adj", graph.bipartite_adjacency(), persistent=False)  # [U+I, U+I]
        seen = torch.bincount(graph.train_edge_index[1].long(), minlength=self.num_items) > 0
        self.register_buffer("item_seen", seen[:, None].float(), persistent=False)  # [I, 1] has a training edge
        if self.use_social:
            self.register_buffer("social_adj", graph.social_adjacency(), persistent=False)  # [U, U]
        if self.use_emotion:
            emo, has = graph.emotion
            self.register_buffer("item_emotion", emo.float() * has[:, None].float(), persistent=False)  # [I, De]
            self.register_buffer("emotion_items", has.nonzero().squeeze(1), persistent=False)  # [I_e]
            u, i = graph.train_edge_index
            self.register_buffer("user_items", row_mean_adjacency(u, i, self.num_users, self.num_items),
                                 persistent=False)  # [U, I]
            if self.use_social:
                s = graph.social_edge_index
                self.register_buffer("friends", row_mean_adjacency(s[0], s[1], self.num_users, self.num_users),
                                     persistent=False)  # [U, U]

    # -- per-modality inputs ------------------------------------------------------------------------
    def _item_input(self, m: str) -> torch.Tensor:  # [I, d]
        if m == "id":  # "zero": an item without training interactions has no ID input (see the module docstring)
            return self.item_id.weight * self.item_seen if self.unseen_item_ids == "zero" else self.item_id.weight
        feats, present = self.graph.modality(m)
        x = self.proj[_k(m)](feats)
        return torch.where(present[:, None], x, self.missing[_k(m)].expand_as(x))

    def _present(self, m: str) -> torch.Tensor | None:
        return None if m == "id" else self.graph.modality(m)[1]

    def _weights(self, num_layers: int) -> list[float]:
        """Layer weights of eqs. 2-3: 1/(l+1) ("paper"), or those divided by their sum ("normalised")."""
        w = [1.0 / (layer + 1) for layer in range(num_layers + 1)]
        return w if self.layer_weights == "paper" else [x / sum(w) for x in w]

    def forward(self) -> RecOutput:
        # eq. 2 for every modality at once: Â acts on each column block alike, so the modalities' layer-0
        # inputs side by side [U+I, M·d] propagate in one sparse product per layer
        x = torch.cat([torch.cat([self.user_emb[_k(m)].weight, self._item_input(m)], 0) for m in self.names], 1)
        h = light_propagate(x, self.adj, self.num_layers, self._weights(self.num_layers)).split(x.shape[1] // len(
            self.names), dim=1)
        users = {m: hm[: self.num_users] for m, hm in zip(self.names, h, strict=True)}
        items = {m: hm[self.num_users:] for m, hm in zip(self.names, h, strict=True)}
        parts = [users[m] for m in self.names]
        if self.use_social:  # eq. 3
            parts.append(light_propagate(self.social_emb.weight, self.social_adj, self.social_layers,
                                         self._weights(self.social_layers)))
        user = ACTIVATIONS[self.user_activation](self.fuse(torch.cat(parts, 1)))  # eq. 4, [U, d]
        item = sum(a * items[m] for a, m in zip(self.alpha, self.names, strict=True))  # eq. 5, [I, d]
        if self.use_emotion:
            h_i = self.emo_proj(self.item_emotion)  # [I, d], zero rows for items without emotion
            has = self.emotion_items  # the gate acts on the items with emotion only (the others keep e_i)
            item = item.index_copy(0, has, self.item_gate(item[has], h_i[has]))
            h_u = torch.sparse.mm(self.user_items, h_i)  # mean emotion of the user's training songs
            if self.use_social:
                h_u = 0.5 * (h_u + torch.sparse.mm(self.friends, h_u))  # community emotion
            user = self.user_gate(user, h_u)
        return RecOutput(user, item, {"users": users, "items": items})

    def aux_losses(self, out: RecOutput, users, pos, neg) -> dict[str, torch.Tensor]:
        """Per-modality BPR (weight ``modality_bpr_weight``) and λ1 · :math:`\\mathcal{L}_{ML}` (eq. 6) over a
        candidate set shared by the batch."""
        losses = {}
        per_m = out.extra["items"]
        if self.modality_bpr_weight > 0:
            bpr = sum(F.softplus((out.extra["users"][m][users] * (per_m[m][neg] - per_m[m][pos])).sum(-1)).mean()
                      for m in self.names)
            losses["modality_bpr"] = self.modality_bpr_weight * bpr
        if self.mutual_learning and len(self.names) > 1:
            h = max(1, self.ml_candidates // 2)
            cand = torch.cat([pos[:h], neg[:h]])  # [C] candidate items shared by the batch's users
            scores, valid = [], []
            for m in self.names:
                scores.append(out.extra["users"][m][users] @ per_m[m][cand].T)  # [B, C]
                p = self._present(m)
                valid.append(torch.ones_like(cand, dtype=torch.bool) if p is None else p[cand])
            losses["mutual"] = self.mutual_weight * mutual_learning_loss(scores, valid, self.temperature)
        return losses

    def dense_parameters(self) -> list[torch.Tensor]:
        """W_u, projections, missing vectors, gates and α: regularised by λ2 too when ``reg_dense``."""
        if not self.reg_dense:
            return []
        skip = {id(e.weight) for e in self.user_emb.values()}
        skip |= {id(getattr(self, n).weight) for n in ("item_id", "social_emb") if hasattr(self, n)}
        return [p for p in self.parameters() if id(p) not in skip]

    def ego_rows(self, users, pos, neg):
        rows = [self.user_emb[_k(m)](users) for m in self.names]
        if "id" in self.names:
            rows += [self.item_id(pos), self.item_id(neg)]
        if self.use_social:
            rows.append(self.social_emb(users))
        return rows


def _k(name: str) -> str:
    """Module/parameter dict key of a modality ("m_" avoids clashes with dict methods such as 'copy')."""
    return f"m_{name}"
