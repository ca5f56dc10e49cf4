"""MM-GNN: socially aware multi-modal music recommendation (seed 002, Ziaoddini, §4.2-4.3, eqs. 2-6).

For each modality m (text/lyrics, audio, visual, ... — whatever `RecGraph.modalities` holds — and, by
default, an item-ID pseudo-modality) an independent LightGCN-style GNN propagates over the user-song
training graph (eq. 2) with layer weights 1/(l+1): e_m = Σ_l e_m^(l) / (l+1). A social GNN does the
same over the friendship graph (eq. 3). Users are fused (eq. 4), songs are a weighted sum (eq. 5):

    e_u = σ(W_u [e_u,m1 ⊕ ... ⊕ e_u,mM ⊕ e_u,soc])          ŷ_ui = e_uᵀ e_i
    e_i = Σ_m α_m e_i,m

Loss (in `aux_losses`; BPR on ŷ and λ2 L2 are added by the Recommender): λ1 · L_ML (eq. 6, symmetric KL
between the modalities' softened score distributions, λ1 = 0.5, §5.3) + a BPR loss per modality
(Fig. 1's L_lyrics, L_audio, L_visual; weight ``modality_bpr_weight``).

Where the paper is vague, and what we chose:
- Item input of a feature modality: Linear(D_m → d) of the pre-extracted feature (eq. 1); an item
  *missing* the modality gets a learned per-modality "missing" vector instead, so every item has a
  finite embedding and propagation fills it from its listeners. A modality absent for every item is
  dropped from the model (it carries no information; a warning says so).
- Users start from per-modality ID embeddings (the paper's "initial user embeddings e_u"); songs may
  also have an ID pseudo-modality (``use_id_modality``): with audio and images absent (Last.fm 2K) the
  tag text alone covers 69% of the artists, and every GNN recommender of Table 2 has ID embeddings.
- σ in eq. 4 is not named: ``user_activation`` (default "tanh"; "identity", "sigmoid", "leaky_relu").
- α, β, γ of eq. 5 are learnable scalars initialised to 1/M.
- "Softened prediction probability distribution" (eq. 6): for each user of the batch, a softmax with
  temperature ``temperature`` over the scores of ``ml_candidates`` candidate items shared by the batch
  (the first C/2 positives and negatives of the shuffled batch; all 2B cost O(B²) and dominated the
  step time); items missing either modality of a pair are excluded from that pair's distributions.
  L_ML = Σ_{m1<m2} KL(P1‖P2) + KL(P2‖P1), averaged over users, times T² (Hinton et al.).
- Emotion-aware embeddings (§3.3, no equation): an item's emotion vector is projected to d and added
  through a sigmoid gate g = σ(W_g [e_i ⊕ h_i]); a user's emotion profile is the mean over their
  training songs and, for community emotion, their friends' profiles, gated into e_u the same way.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from audiognn.models.recsys_baselines import RecModel, RecOutput, light_propagate

log = logging.getLogger(__name__)


def mutual_learning_loss(scores: list[torch.Tensor], valid: list[torch.Tensor] | None = None,
                         temperature: float = 1.0) -> torch.Tensor:
    """Seed 002 eq. 6: Σ_{m1≠m2} KL(P_m1 ‖ P_m2) over unordered pairs counted both ways.

    scores: M tensors ``[B, C]`` (per-modality scores of C candidate items per user);
    valid: M bool tensors ``[B, C]`` or ``[C]`` (candidate present in modality m), or None.
    Returns a scalar: 0 when all modalities give the same distributions, > 0 otherwise.
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
    """See the module docstring. Ablations: ``use_social``, ``mutual_learning``, ``use_emotion``,
    ``modalities`` (names from the graph plus "id"; None = all present ones), ``use_id_modality``."""

    def __init__(self, graph, embedding_dim: int = 64, num_layers: int = 3, social_layers: int = 2,
                 modalities: list[str] | None = None, use_id_modality: bool = True, use_social: bool = True,
                 use_emotion: bool = True, mutual_learning: bool = True, mutual_weight: float = 0.5,
                 temperature: float = 1.0, ml_candidates: int = 256, modality_bpr_weight: float = 1.0,
                 user_activation: str = "tanh",
                 init_std: float = 0.1):
        super().__init__(graph)
        d = embedding_dim
        self.num_layers, self.social_layers = num_layers, social_layers
        self.mutual_learning, self.mutual_weight, self.temperature = mutual_learning, mutual_weight, temperature
        self.modality_bpr_weight, self.ml_candidates = modality_bpr_weight, ml_candidates
        wanted = list(graph.modalities) if modalities is None else [m for m in modalities if m != "id"]
        unknown = set(wanted) - set(graph.modalities)
        if unknown:
            raise ValueError(f"MMGNN: modalities {sorted(unknown)} are not in the data "
                             f"(available: {sorted(graph.modalities)} and 'id')")
        use_id = use_id_modality and (modalities is None or "id" in modalities)
        self.feature_names = []
        for m in wanted:
            if not bool(graph.modalities[m][1].any()):
                log.warning("MMGNN: modality %r is missing for every item; it is left out of the model", m)
                continue
            self.feature_names.append(m)
        self.names = (["id"] if use_id else []) + self.feature_names
        if not self.names:
            raise ValueError("MMGNN: no modality left (enable use_id_modality or give a present modality)")
        self.register_buffer("adj", graph.bipartite_adjacency(), persistent=False)
        self.user_emb = nn.ModuleDict({_k(m): nn.Embedding(self.num_users, d) for m in self.names})
        if use_id:
            self.item_id = nn.Embedding(self.num_items, d)
            nn.init.normal_(self.item_id.weight, std=init_std)
        self.proj = nn.ModuleDict()
        self.missing = nn.ParameterDict()
        for m in self.feature_names:
            f, present = graph.modalities[m]
            self.register_buffer(f"feat_{m}", f.float(), persistent=False)  # [I, D_m]
            self.register_buffer(f"present_{m}", present.bool(), persistent=False)  # [I]
            self.proj[_k(m)] = nn.Linear(f.shape[1], d)
            self.missing[_k(m)] = nn.Parameter(torch.randn(d) * init_std)
        for e in self.user_emb.values():
            nn.init.normal_(e.weight, std=init_std)
        # social GNN (eq. 3)
        self.use_social = use_social and graph.social_edge_index.numel() > 0
        if use_social and not self.use_social:
            log.warning("MMGNN: use_social=True but the data has no social edges; social GNN disabled")
        n_user_parts = len(self.names)
        if self.use_social:
            self.register_buffer("social_adj", graph.social_adjacency(), persistent=False)
            self.social_emb = nn.Embedding(self.num_users, d)
            nn.init.normal_(self.social_emb.weight, std=init_std)
            n_user_parts += 1
        self.fuse = nn.Linear(n_user_parts * d, d)  # W_u, eq. 4
        acts = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "identity": lambda x: x,
                "leaky_relu": lambda x: F.leaky_relu(x, 0.2)}
        if user_activation not in acts:
            raise ValueError(f"MMGNN: user_activation must be one of {sorted(acts)}, got {user_activation!r}")
        self.user_activation = user_activation
        self._act = acts[user_activation]
        self.alpha = nn.Parameter(torch.full((len(self.names),), 1.0 / len(self.names)))  # α, β, γ of eq. 5
        # emotion (§3.3)
        self.use_emotion = use_emotion and graph.emotion is not None and bool(graph.emotion[1].any())
        if self.use_emotion:
            emo, has = graph.emotion
            self.register_buffer("emotion", emo.float() * has[:, None].float(), persistent=False)  # [I, De]
            self.register_buffer("has_emotion", has.bool(), persistent=False)
            self.emo_proj = nn.Linear(emo.shape[1], d, bias=False)
            self.item_gate, self.user_gate = _Gate(d), _Gate(d)
            u, i = graph.train_edge_index
            self.register_buffer("user_items", _row_mean_adj(u, i, self.num_users, self.num_items), persistent=False)
            if self.use_social:
                s = graph.social_edge_index
                self.register_buffer("friends", _row_mean_adj(s[0], s[1], self.num_users, self.num_users),
                                     persistent=False)

    # -- per-modality inputs ------------------------------------------------------------------------
    def _item_input(self, m: str) -> torch.Tensor:  # [I, d]
        if m == "id":
            return self.item_id.weight
        present = getattr(self, f"present_{m}")
        x = self.proj[_k(m)](getattr(self, f"feat_{m}"))
        return torch.where(present[:, None], x, self.missing[_k(m)].expand_as(x))

    def _present(self, m: str) -> torch.Tensor | None:
        return None if m == "id" else getattr(self, f"present_{m}")

    def forward(self) -> RecOutput:
        w = [1.0 / (layer + 1) for layer in range(self.num_layers + 1)]  # eq. 2: Σ_l e^(l) / (l+1)
        users, items = {}, {}
        for m in self.names:
            x = torch.cat([self.user_emb[_k(m)].weight, self._item_input(m)], 0)  # [U+I, d]
            h = light_propagate(x, self.adj, self.num_layers, w)
            users[m], items[m] = h[: self.num_users], h[self.num_users:]
        parts = [users[m] for m in self.names]
        if self.use_social:
            ws = [1.0 / (layer + 1) for layer in range(self.social_layers + 1)]  # eq. 3
            parts.append(light_propagate(self.social_emb.weight, self.social_adj, self.social_layers, ws))
        user = self._act(self.fuse(torch.cat(parts, 1)))  # eq. 4, [U, d]
        item = sum(a * items[m] for a, m in zip(self.alpha, self.names, strict=True))  # eq. 5, [I, d]
        if self.use_emotion:
            h_i = self.emo_proj(self.emotion)  # [I, d], zero rows for items without emotion
            item = torch.where(self.has_emotion[:, None], self.item_gate(item, h_i), item)
            h_u = torch.sparse.mm(self.user_items, h_i)  # mean emotion of the user's training songs
            if self.use_social:
                h_u = 0.5 * (h_u + torch.sparse.mm(self.friends, h_u))  # community emotion
            user = self.user_gate(user, h_u)
        return RecOutput(user, item, {"users": users, "items": items})

    def aux_losses(self, out: RecOutput, users, pos, neg) -> dict[str, torch.Tensor]:
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


def _row_mean_adj(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """Sparse ``[n_rows, n_cols]`` row-normalised (mean) adjacency."""
    deg = torch.bincount(rows, minlength=n_rows).clamp(min=1).float()
    vals = 1.0 / deg[rows]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n_rows, n_cols)).coalesce()
