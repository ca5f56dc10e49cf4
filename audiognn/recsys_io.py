"""Alias of `audiognn.data.modality_file` (the recommender's per-item modality file format), kept for old imports."""

from audiognn.data.modality_file import align_modality, read_modality, write_modality

__all__ = ["align_modality", "read_modality", "write_modality"]
