"""Item side information derived from Last.fm tags: a text modality (TF-IDF + SVD) and emotion vectors.

Ziaoddini, *Socially Aware Music Recommendation: a Multi-Modal GNN*, §3.3 takes emotion from textual signals
(valence-arousal labels, lyric sentiment) without a recipe; ours: a small mood lexicon maps tag strings to the
four quadrants of the valence/arousal plane (Russell's circumplex), and an item's emotion vector is the share
of its mood-tag applications in each quadrant.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.preprocessing import normalize

MOOD_LEXICON = {
    "happy/energetic": ["happy", "upbeat", "fun", "party", "energetic", "cheerful", "joy", "feel good",
                        "summer", "dance", "uplifting", "euphoric"],
    "angry/tense": ["aggressive", "angry", "brutal", "intense", "dark", "heavy", "hate", "rage", "evil"],
    "sad/melancholic": ["sad", "melanchol", "depress", "lonely", "heartbreak", "emo", "dreary",
                        "bittersweet", "gloomy", "cry"],
    "calm/relaxed": ["chill", "relax", "calm", "mellow", "soft", "peaceful", "ambient", "dreamy", "soothing",
                     "romantic", "love", "beautiful", "sweet"],
}


def tag_emotion(tag_names: list[str]) -> np.ndarray:
    """``[T, 4]`` membership of each tag string in the four mood quadrants (word-start substring match)."""
    out = np.zeros((len(tag_names), len(MOOD_LEXICON)), dtype=np.float32)
    for q, words in enumerate(MOOD_LEXICON.values()):
        pat = re.compile(r"(^|[\s\-_/])(" + "|".join(re.escape(w) for w in words) + ")")
        for t, name in enumerate(tag_names):
            if pat.search(name.lower()):
                out[t, q] = 1.0
    return out


def tag_text_features(counts: csr_matrix, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Text modality from an item × tag count matrix ``[I, T]``: sublinear TF-IDF, truncated SVD to
    ``min(dim, min(I, T) - 1)`` components, rows L2-normalised. Returns (features ``[I, D]`` float32, zero for
    untagged items, present ``[I]`` bool)."""
    present = np.asarray(counts.sum(1)).ravel() > 0
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    k = min(dim, min(tfidf.shape) - 1)
    z = TruncatedSVD(n_components=k, random_state=seed).fit_transform(tfidf)
    text = normalize(z).astype(np.float32)
    text[~present] = 0.0
    return text, present


def tag_emotion_vectors(counts: csr_matrix, tag_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Emotion from an item × tag count matrix ``[I, T]``: each item's mood-tag counts per quadrant, normalised
    to sum 1. Returns (vectors ``[I, 4]`` float32, zero without mood tags, present ``[I]`` bool)."""
    mood = counts @ tag_emotion(tag_names)  # [I, 4] mood-tag counts
    has = mood.sum(1) > 0
    emo = np.zeros_like(mood, dtype=np.float32)
    emo[has] = mood[has] / mood[has].sum(1, keepdims=True)
    return emo.astype(np.float32), has
