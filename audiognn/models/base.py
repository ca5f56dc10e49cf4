"""The declared interface of audio backbones: ``x [B, T, F]`` log-mel -> clip embedding -> logits.

Tasks and callbacks rely on it (``isinstance(model, AudioBackbone)``) instead of probing for methods:
:class:`AudioClassifier <audiognn.tasks.audio_classifier.AudioClassifier>` trains any backbone, the
embedding callbacks read :meth:`AudioBackbone.embed`, and a trained backbone can feed other models (the
genre graph's node features).
"""

from __future__ import annotations

import torch
from torch import nn


class AudioBackbone(nn.Module):
    r"""Base class of audio backbones (LHGNN, GenreGNN, CNN, RNN).

    A subclass sets :attr:`embed_dim` and :attr:`head` (the classification layer(s), mapping
    ``[B, embed_dim]`` to logits) in its ``__init__`` and implements :meth:`embed`; :meth:`forward` is
    ``head(embed(x))`` unless overridden.

    .. math::
        \mathbf{z} = \mathrm{embed}(\mathbf{X}) \in \mathbb{R}^{D}, \qquad
        \hat{\mathbf{y}} = \mathrm{head}(\mathbf{z}) \in \mathbb{R}^{C}

    Shapes:
        - **input:** normalised log-mel :math:`(B, T, F)`
        - **embed output:** :math:`(B, D)` with :math:`D` = ``embed_dim``
        - **forward output:** logits :math:`(B, C)`
    """

    embed_dim: int
    head: nn.Module

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, F]`` -> clip embedding ``[B, embed_dim]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement embed(x)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, T, F]`` -> logits ``[B, num_classes]``."""
        return self.head(self.embed(x))


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
