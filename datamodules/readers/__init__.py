"""Dataset readers for ``python -m datamodules.prepare READER ...``: one module per dataset layout.

``READERS`` (name -> reader class):

``folder``    a folder per class, GTZAN layout ``genres/<genre>/<genre>.000NN.wav``; multi-class
              (:mod:`~datamodules.readers.folder`).
``esc50``     ESC-50: ``meta/esc50.csv`` + ``audio/``; split ``fold1``..``fold5``; multi-class.
``urbansound8k`` UrbanSound8K: ``metadata/UrbanSound8K.csv`` + ``audio/fold<N>/``; split ``fold1``..``fold10``.
``fsd50k``    FSD50K: ``FSD50K.ground_truth/{dev,eval,vocabulary}.csv`` + ``FSD50K.{dev,eval}_audio/``;
              official train/val split, eval -> test; multi-label.
``audioset``  AudioSet segment CSVs + ``class_labels_indices.csv`` + a folder of downloaded clips; multi-label.
``csv``       a generic manifest ``path,labels[,split][,fold]`` (:mod:`~datamodules.readers.manifest`).
``synthetic`` procedural audio with planted classes (:mod:`~datamodules.readers.synthetic`).

Shared types, conventions (keys, failure records, seeded splits) and helpers: :mod:`datamodules.readers.base`.
"""

from __future__ import annotations

import argparse

from datamodules.readers.audioset import AudioSetReader
from datamodules.readers.base import (
    AUDIO_EXTENSIONS,
    BaseReader,
    Clip,
    Failures,
    Reader,
    ReaderError,
    ReadResult,
    dedupe_keys,
    failure,
    sanitize_key,
    stratified_split,
)
from datamodules.readers.esc50 import ESC50Reader
from datamodules.readers.folder import FOLDER_EXTENSIONS, FolderReader
from datamodules.readers.fsd50k import FSD50KReader
from datamodules.readers.manifest import CSVReader
from datamodules.readers.synthetic import SyntheticReader, ensure_synthetic, synthetic_info, synthetic_result
from datamodules.readers.urbansound8k import UrbanSound8KReader

READERS: dict[str, type[BaseReader]] = {
    r.name: r for r in (FolderReader, ESC50Reader, UrbanSound8KReader, FSD50KReader, AudioSetReader, CSVReader,
                        SyntheticReader)
}


def read_dataset(reader: str, argv: list[str]) -> ReadResult:
    """Convenience for tests and scripts: parse ``argv`` with the reader's arguments and read."""
    if reader not in READERS:
        raise ReaderError(f"unknown reader {reader!r}; expected one of {sorted(READERS)}")
    parser = argparse.ArgumentParser(prog=f"prepare {reader}")
    READERS[reader].add_arguments(parser)
    return READERS[reader].read(parser.parse_args(argv))


__all__ = [
    "AUDIO_EXTENSIONS", "FOLDER_EXTENSIONS", "READERS", "AudioSetReader", "BaseReader", "CSVReader", "Clip",
    "ESC50Reader", "FSD50KReader", "Failures", "FolderReader", "ReadResult", "Reader", "ReaderError",
    "SyntheticReader", "UrbanSound8KReader", "dedupe_keys", "ensure_synthetic", "failure", "read_dataset",
    "sanitize_key", "stratified_split", "synthetic_info", "synthetic_result",
]
