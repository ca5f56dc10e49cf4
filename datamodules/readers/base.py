"""Types and helpers shared by every dataset reader.

A reader turns a dataset on disk (audio files plus its metadata) into a :class:`ReadResult`: a list of
:class:`Clip` s — key, labels, split, fold, absolute audio path, JSON-serialisable metadata — and a class
vocabulary. Readers never decode audio; the prepare driver does (and lists undecodable files itself).

Conventions shared by all readers:

* A single bad row never raises: it is left out and listed in ``ReadResult.failures`` as
  ``{"key", "path", "split", "reason", "detail"}`` (:class:`Failures`) — the driver's failure format:
  ``reason`` is a short tag (``missing_file``, ``unknown_label``, ``no_label``, ``malformed_row``,
  ``duplicate``, ``label_conflict``, ``multiple_labels``, ``ambiguous_name``, ``unsupported_format``,
  ``not_in_split_files``), ``detail`` names the metadata file and line and what was wrong; ``split`` and
  ``path`` are None where unknown. A missing dataset root or a missing / malformed metadata file is fatal
  and raises :class:`ReaderError` (a ``ValueError``) naming the file and the expected form.
* Keys contain only ``[A-Za-z0-9_-]``: every other character, the dot included, becomes ``_``. The dot is
  excluded on purpose although tar allows it: webdataset splits a member name at the *first* dot of its
  basename to find the sample key (``tariterators.base_plus_ext``), so a key ``blues.00000`` would be read
  back as ``blues``. Keys are unique within a dataset; should two sanitised keys collide, the later ones (in
  sorted order of their source identifier) get ``-<8 hex of sha1(identifier)>`` appended, so keys are
  stable across runs.
* Seeded splits are stratified per class and deterministic (see :func:`stratified_split`).
* Command-line options are declared as data (:func:`arg`, ``BaseReader.arguments``) and added by the one
  helper :meth:`BaseReader.add_arguments`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

#: Extensions the readers accept as audio (what soundfile decodes).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


class ReaderError(ValueError):
    """A fatal problem with the dataset layout or a metadata file (not a single bad row)."""


@dataclass
class Clip:
    """One clip of a dataset, as a reader lists it (audio not decoded).

    Args:
        key: unique within the dataset, stable across runs, tar- and webdataset-safe: ``[A-Za-z0-9_-]``.
        labels: class names exactly as in ``ReadResult.classes``.
        split: ``"train" | "val" | "test" | "fold1".."fold5" | ...``.
        path: audio file to decode (absolute), or None for generated clips.
        fold: cross-validation fold, when the dataset has folds.
        meta: JSON-serialisable extras.
    """

    key: str
    labels: list[str]
    split: str
    path: str | None = None
    fold: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class ReadResult:
    """What a reader returns: dataset ``name``, ``classes`` (the vocabulary in index order), whether it is
    ``multilabel``, the ``clips``, the ``failures`` (rows rejected while reading) and a ``split_note``."""

    name: str
    classes: list[str]
    multilabel: bool
    clips: list[Clip]
    failures: list[dict]
    split_note: str = ""


class Reader(Protocol):
    """What ``prepare`` needs of a reader: a ``name``, its command-line options and ``read``."""

    name: str

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the reader's command-line options to ``parser``."""

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        """List the dataset's clips from the parsed options (fatal problems raise :class:`ReaderError`)."""


# --- command-line options ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arg:
    """One ``parser.add_argument(*flags, **kwargs)`` call, declared as data."""

    flags: tuple[str, ...]
    kwargs: dict


def arg(*flags: str, **kwargs) -> Arg:
    """Declare an option exactly as ``argparse.ArgumentParser.add_argument`` takes it."""
    return Arg(flags, kwargs)


#: Options of a seeded stratified split (readers that may split themselves).
SPLIT_FRACTION_ARGS = (
    arg("--val-fraction", type=float, default=0.1, help="seeded split: validation share"),
    arg("--test-fraction", type=float, default=0.1, help="seeded split: test share"),
    arg("--seed", type=int, default=0, help="seed of the stratified split"),
)


class BaseReader:
    """Base of the readers: ``name``, the declared ``arguments`` and the one helper that adds them."""

    name: str = ""
    arguments: tuple[Arg, ...] = ()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the reader's declared options to ``parser``."""
        for a in cls.arguments:
            parser.add_argument(*a.flags, **a.kwargs)


# --- failures and keys -------------------------------------------------------------------------------------
def failure(key: str, path: str | None, reason: str, detail: str = "", split: str | None = None) -> dict:
    """A rejected row: ``reason`` is a short tag (as the driver's own, e.g. ``missing_file``), ``detail``
    says where (file:line) and what."""
    return {"key": key, "path": path, "split": split, "reason": reason, "detail": detail}


class Failures(list):
    """The failure records of one read (a list of :func:`failure` dicts)."""

    def add(self, key: str, reason: str, detail: str, path: str | None = None, split: str | None = None) -> None:
        """Record one rejected row."""
        self.append(failure(key, path, reason, detail, split))


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_key(text: str) -> str:
    """Map an identifier to a key of ``[A-Za-z0-9_-]`` (runs of other characters -> ``_``)."""
    key = _UNSAFE.sub("_", text)
    return key if key.strip("_") else "clip"


def dedupe_keys(clips: list[Clip], sources: list[str]) -> None:
    """Make ``clip.key`` unique in place; ``sources[i]`` is the unsanitised identifier of ``clips[i]``.

    Clips whose keys collide are ordered by their source identifier; the first keeps its key, the
    others get ``-<sha1(source)[:8]>`` appended (stable across runs and independent of listing order).
    """
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(clips):
        by_key[c.key].append(i)
    taken = set(by_key)
    for key, idx in by_key.items():
        if len(idx) < 2:
            continue
        idx = sorted(idx, key=lambda i: sources[i])
        for i in idx[1:]:
            new = f"{key}-{hashlib.sha1(sources[i].encode()).hexdigest()[:8]}"
            while new in taken:
                new = f"{new}x"
            taken.add(new)
            clips[i].key = new


# --- files and CSVs ----------------------------------------------------------------------------------------
def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else a :class:`ReaderError` saying what was expected there."""
    if not path.is_dir():
        raise ReaderError(f"directory {str(path)!r} does not exist; expected the {what}")
    return path


def require_file(path: Path, expected: str) -> Path:
    """``path`` if it is a file, else a :class:`ReaderError` saying what was expected."""
    if not path.is_file():
        raise ReaderError(f"metadata file {str(path)!r} not found; expected {expected}")
    return path


def resolve_relative(path: str | Path, *bases: Path) -> Path:
    """``path`` as given when it exists or is absolute, else the first ``base / path`` that exists."""
    p = Path(path)
    for base in bases:
        if not p.is_file() and not p.is_absolute() and (base / p).is_file():
            p = base / p
    return p


def under(root: Path, path: str) -> Path:
    """``path`` if absolute, else ``root / path``."""
    p = Path(path)
    return p if p.is_absolute() else root / p


def read_csv_rows(path: Path, required: list[str], expected: str) -> list[tuple[int, dict]]:
    """Rows of a CSV with a header as (line number, dict); raise if the header lacks a required column.

    A row with too many fields has a ``None`` key, one with too few ``None`` values (see :func:`malformed`).
    """
    require_file(path, expected)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM (spreadsheet exports)
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ReaderError(f"{path}: header {header!r} lacks column(s) {missing!r}; expected {expected}")
        reader.fieldnames = header
        return [(reader.line_num, row) for row in reader]


def malformed(row: dict, columns: list[str]) -> bool:
    """True for a CSV row with the wrong number of fields (extra fields or a missing column)."""
    return None in row or any(row.get(c) is None for c in columns)


def read_name_list(path: Path, expected: str, sep: str | None = None) -> list[tuple[int, str]]:
    """(line number, entry) of a text file of names, one per line: the entry is the stripped line (its first
    ``sep``-separated field when ``sep`` is given); blank entries and ``#`` comments are left out."""
    lines = require_file(path, expected).read_text(encoding="utf-8-sig").splitlines()
    entries = [(ln, (line.split(sep)[0] if sep else line).strip()) for ln, line in enumerate(lines, 1)]
    return [(ln, e) for ln, e in entries if e and not e.startswith("#")]


def split_labels(field_value: str) -> list[str]:
    """Labels in one CSV field: separated by ``;`` if there is one, else by ``,``; blanks dropped."""
    sep = ";" if ";" in field_value else ","
    return [t.strip() for t in field_value.split(sep) if t.strip()]


# --- splits ------------------------------------------------------------------------------------------------
def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def stratified_split(
    strata: dict[str, str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Seeded stratified split: ``{item: stratum}`` -> ``{item: "train" | "val" | "test"}``.

    Per stratum (class), the items are sorted, shuffled with ``numpy.random.default_rng`` seeded by
    ``(seed, stratum)``, and the first ``round(n * test_fraction)`` go to test, the next
    ``round(n * val_fraction)`` to val, the rest to train; when a stratum has at least one item, at
    least one of them stays in train. Hand-written rather than scikit-learn's ``train_test_split``,
    which raises on classes with a single member and whose per-class counts depend on the whole set;
    here each class's assignment depends only on its own members and the seed.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ReaderError(
            f"split fractions val={val_fraction}, test={test_fraction}: each must be in [0, 1) "
            "and their sum below 1"
        )
    groups: dict[str, list[str]] = defaultdict(list)
    for item, stratum in strata.items():
        groups[stratum].append(item)
    out: dict[str, str] = {}
    for stratum in sorted(groups):
        items = sorted(groups[stratum])
        n = len(items)
        stratum_seed = int.from_bytes(hashlib.sha1(stratum.encode()).digest()[:4], "little")
        order = np.random.default_rng([seed, stratum_seed]).permutation(n)
        n_test = _round_half_up(n * test_fraction)
        n_val = _round_half_up(n * val_fraction)
        while n_test + n_val >= n and n_test + n_val > 0:  # keep one training item
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        for rank, j in enumerate(order):
            out[items[j]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def seeded_split_note(args: argparse.Namespace, how: str) -> str:
    """The ``split_note`` of a seeded split made ``how`` with the :data:`SPLIT_FRACTION_ARGS` options."""
    return f"{how} (val {args.val_fraction}, test {args.test_fraction}, seed {args.seed})"
