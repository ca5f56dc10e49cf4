"""Dataset readers for ``python -m datamodules.prepare READER ...``.

A reader turns a dataset on disk (audio files plus its metadata) into a list of :class:`Clip` s —
key, labels, split, fold, absolute audio path, JSON-serialisable metadata — and a class vocabulary.
Readers never decode audio; the prepare driver does (and lists undecodable files itself).

Readers (``READERS``; the driver adds ``synthetic`` itself):

``folder``   a folder per class, GTZAN layout ``genres/<genre>/<genre>.000NN.wav``; multi-class.
``esc50``    ESC-50: ``meta/esc50.csv`` + ``audio/``; split ``fold1``..``fold5``; multi-class.
``fsd50k``   FSD50K: ``FSD50K.ground_truth/{dev,eval,vocabulary}.csv`` + ``FSD50K.{dev,eval}_audio/``;
             official train/val split, eval -> test; multi-label.
``audioset`` AudioSet segment CSVs + ``class_labels_indices.csv`` + a folder of downloaded clips; multi-label.
``csv``      a generic manifest ``path,labels[,split][,fold]``.

Conventions shared by all readers:

* A single bad row never raises: it is left out and listed in ``ReadResult.failures`` as
  ``{"key", "path", "split", "reason", "detail"}`` — the driver's failure format: ``reason`` is a short
  tag (``missing_file``, ``unknown_label``, ``no_label``, ``malformed_row``, ``duplicate``,
  ``label_conflict``, ``multiple_labels``, ``ambiguous_name``, ``unsupported_format``,
  ``not_in_split_files``), ``detail`` names the metadata file and line and what was wrong; ``split``
  and ``path`` are None where unknown. A missing dataset root or a missing / malformed metadata file
  is fatal and raises :class:`ReaderError` (a ``ValueError``) naming the file and the expected form.
* Keys contain only ``[A-Za-z0-9_-]``: every other character, the dot included, becomes ``_``. The dot
  is excluded on purpose although tar allows it: webdataset splits a member name at the *first* dot of
  its basename to find the sample key (``tariterators.base_plus_ext``), so a key ``blues.00000`` would
  be read back as ``blues``. Keys are unique within a dataset; should two sanitised keys collide, the
  later ones (in sorted order of their source identifier) get ``-<8 hex of sha1(identifier)>``
  appended, so keys are stable across runs.
* Seeded splits are stratified per class and deterministic (see :func:`stratified_split`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

#: Extensions the readers accept as audio (what soundfile decodes; ``.au`` is the original GTZAN format).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
FOLDER_EXTENSIONS = (".wav", ".flac", ".ogg", ".au")


class ReaderError(ValueError):
    """A fatal problem with the dataset layout or a metadata file (not a single bad row)."""


@dataclass
class Clip:
    key: str  # unique within the dataset, stable across runs, tar- and webdataset-safe: [A-Za-z0-9_-]
    labels: list[str]  # class names exactly as in ReadResult.classes
    split: str  # "train" | "val" | "test" | "fold1".."fold5" | ...
    path: str | None = None  # audio file to decode (absolute)
    fold: int | None = None
    meta: dict = field(default_factory=dict)  # JSON-serialisable extras


@dataclass
class ReadResult:
    name: str  # dataset name, e.g. "esc50"
    classes: list[str]  # the vocabulary, in index order
    multilabel: bool
    clips: list[Clip]
    failures: list[dict]  # {"key", "path", "reason"} for rows rejected while reading
    split_note: str = ""


class Reader(Protocol):
    name: str

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult: ...


# ----------------------------------------------------------------------------------------------------
# shared helpers


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


def _failure(key: str, path: str | None, reason: str, detail: str = "", split: str | None = None) -> dict:
    """A rejected row: ``reason`` is a short tag (as the driver's own, e.g. ``missing_file``), ``detail``
    says where (file:line) and what."""
    return {"key": key, "path": path, "split": split, "reason": reason, "detail": detail}


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ReaderError(f"directory {str(path)!r} does not exist; expected the {what}")
    return path


def _require_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise ReaderError(f"metadata file {str(path)!r} not found; expected {expected}")
    return path


def _read_csv_dicts(path: Path, required: list[str], expected: str) -> list[tuple[int, dict]]:
    """Rows of a CSV with a header as (line number, dict); raise if the header lacks a required column."""
    _require_file(path, expected)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM (spreadsheet exports)
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ReaderError(f"{path}: header {header!r} lacks column(s) {missing!r}; expected {expected}")
        reader.fieldnames = header
        rows = []
        for row in reader:
            # None key = extra fields; None value = too few fields
            rows.append((reader.line_num, row))
        return rows


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


def _add_split_fraction_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=float, default=0.1, help="seeded split: validation share")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="seeded split: test share")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified split")


# ----------------------------------------------------------------------------------------------------
# (a) folder per class (GTZAN)


def _split_name_from_file(path: str) -> str:
    stem = Path(path).stem.lower()
    if "train" in stem:
        return "train"
    if "val" in stem or "dev" in stem:
        return "val"
    if "test" in stem or "eval" in stem:
        return "test"
    return sanitize_key(Path(path).stem)


def _parse_split_file_arg(arg: str) -> tuple[str, str]:
    """``FILE`` or ``FILE:SPLIT`` -> (file, split); the split defaults to train/val/test by file name."""
    if ":" in arg and not Path(arg).exists():
        path, split = arg.rsplit(":", 1)
        if split:
            return path, split
    return arg, _split_name_from_file(arg)


class FolderReader:
    """A folder per class (GTZAN genres/<genre>/*.wav); multi-class.

    Layout: ``ROOT/<class>/<file>.{wav,flac,ogg,au}`` (GTZAN ``genres/<genre>/<genre>.000NN.wav``).

    ``root`` may be the folder of class folders or its parent holding ``genres/``. Classes are the
    sorted names of the class folders that contain audio (any depth below the class folder). Files
    are listed recursively; hidden files are ignored.

    Splits: ``--split-files`` lists plain-text files of clip names, one per line (``blues.00000.wav``,
    ``blues.00000`` or ``blues/blues.00000.wav``; blank lines and ``#`` comments ignored); a file's
    split is ``train``/``val``/``test`` when its name contains train / val|dev / test|eval (so the
    fault-filtered ``train_filtered.txt valid_filtered.txt test_filtered.txt`` work as they are), or
    given explicitly as ``FILE:SPLIT``. Names listed but not found, and names listed twice, are
    failures; clips in no split file are skipped and listed as failures ("not in any split file").
    Without split files: a seeded stratified split per class (``--val-fraction``, ``--test-fraction``,
    ``--seed``) — for GTZAN this is the *leaky* protocol (the same artists and recordings recur
    across splits, and accuracies are inflated; Sturm 2013, Kereliuk et al. 2015).
    """

    name = "folder"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("root", help="folder of class folders (e.g. GTZAN 'genres/') or its parent")
        parser.add_argument(
            "--split-files",
            nargs="+",
            default=None,
            metavar="FILE[:SPLIT]",
            help="text files of clip names per split (e.g. train.txt val.txt test.txt); "
            "default: seeded stratified split",
        )
        parser.add_argument(
            "--extensions",
            nargs="+",
            default=list(FOLDER_EXTENSIONS),
            help="audio file extensions to collect (default: %(default)s)",
        )
        parser.add_argument("--name", default="folder", help="dataset name recorded in the output")
        _add_split_fraction_arguments(parser)

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        root = _require_dir(Path(args.root), "folder reader root (class folders, e.g. GTZAN genres/)")
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in args.extensions}

        def class_dirs(d: Path) -> list[Path]:
            return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))

        given_root = root
        if (root / "genres").is_dir():  # the parent of GTZAN's genres/ was given
            root = root / "genres"

        files: dict[str, list[Path]] = {}
        for d in class_dirs(root):
            found = sorted(
                Path(dp) / fn
                for dp, _dns, fns in os.walk(d)
                for fn in fns
                if not fn.startswith(".") and Path(fn).suffix.lower() in exts
            )
            if found:
                files[d.name] = found
        if not files:
            raise ReaderError(
                f"{root}: no class folders with audio ({', '.join(sorted(exts))}) found; expected "
                "ROOT/<class>/<clip>.wav, e.g. genres/blues/blues.00000.wav"
            )
        classes = sorted(files)

        clips: list[Clip] = []
        sources: list[str] = []
        for cls in classes:
            for f in files[cls]:
                rel = f.relative_to(root).as_posix()
                clips.append(
                    Clip(
                        key=sanitize_key(f.stem),
                        labels=[cls],
                        split="",
                        path=str(f.resolve()),
                        meta={"relpath": rel},
                    )
                )
                sources.append(rel)
        dedupe_keys(clips, sources)
        failures: list[dict] = []

        if args.split_files:
            # lookup by relative path without extension, by "<class>/<stem>", and by stem
            by_rel: dict[str, list[int]] = defaultdict(list)
            by_stem: dict[str, list[int]] = defaultdict(list)
            for i, rel in enumerate(sources):
                by_rel[_strip_ext(rel, exts)].append(i)
                by_stem[Path(rel).stem].append(i)
            for arg in args.split_files:
                path_str, split = _parse_split_file_arg(arg)
                sf = Path(path_str)
                for base in (given_root, root):  # relative names: working directory, then the root(s)
                    if not sf.is_file() and not sf.is_absolute() and (base / sf).is_file():
                        sf = base / sf
                _require_file(sf, "a text file of clip names, one per line (e.g. blues.00000.wav)")
                for ln, line in enumerate(sf.read_text(encoding="utf-8-sig").splitlines(), 1):
                    entry = line.split("\t")[0].strip()  # also "path<TAB>label" lists
                    if not entry or entry.startswith("#"):
                        continue
                    norm = _strip_ext(entry.replace("\\", "/").lstrip("./"), exts)
                    parts = norm.split("/")
                    hits = by_rel.get(norm) or by_rel.get("/".join(parts[-2:])) or by_stem.get(parts[-1], [])
                    where = f"{sf}:{ln}"
                    if not hits:
                        failures.append(
                            _failure(
                                sanitize_key(entry),
                                None,
                                "missing_file",
                                f"{where}: {entry!r} listed for split "
                                f"{split!r} but no such audio file under {root}",
                                split=split,
                            )
                        )
                        continue
                    if len(hits) > 1:
                        failures.append(
                            _failure(
                                sanitize_key(entry),
                                None,
                                "ambiguous_name",
                                f"{where}: {entry!r} is ambiguous "
                                f"(matches {[sources[i] for i in hits]}); give class/file",
                                split=split,
                            )
                        )
                        continue
                    c = clips[hits[0]]
                    if c.split:
                        failures.append(
                            _failure(
                                c.key,
                                c.path,
                                "duplicate",
                                f"{where}: {entry!r} listed for split {split!r} "
                                f"but already in split {c.split!r}; kept in {c.split!r}",
                                split=split,
                            )
                        )
                        continue
                    c.split = split
            for c in clips:
                if not c.split:
                    failures.append(
                        _failure(c.key, c.path, "not_in_split_files", "in no split file: skipped")
                    )
            clips = [c for c in clips if c.split]
            note = "splits from files: " + ", ".join(args.split_files)
        else:
            assign = stratified_split(
                {c.key: c.labels[0] for c in clips}, args.val_fraction, args.test_fraction, args.seed
            )
            for c in clips:
                c.split = assign[c.key]
            note = (
                f"seeded stratified split per class (val {args.val_fraction}, test {args.test_fraction}, "
                f"seed {args.seed}); for GTZAN this is the leaky protocol: artists and recordings "
                "repeat across splits, so scores are optimistic (use --split-files for the fault-filtered split)"
            )
        return ReadResult(args.name, classes, False, clips, failures, note)


def _strip_ext(name: str, exts: set[str]) -> str:
    """Drop an audio extension (any of ``exts`` or the usual ones, so a list naming ``.au`` files
    matches the ``.wav`` conversions of GTZAN)."""
    p = Path(name)
    known = exts | set(FOLDER_EXTENSIONS) | {".mp3", ".aiff", ".aif"}
    return name[: -len(p.suffix)] if p.suffix.lower() in known else name


# ----------------------------------------------------------------------------------------------------
# (b) ESC-50


class ESC50Reader:
    """ESC-50 (meta/esc50.csv, audio/); split = fold1..fold5; multi-class.

    ESC-50 (Piczak 2015): ``ROOT/meta/esc50.csv`` (filename,fold,target,category,esc10,src_file,take) and ``ROOT/audio/<filename>``. Classes are the categories ordered by ``target``; split is
    ``fold<fold>`` (five-fold cross-validation). ``--esc10`` keeps the ESC-10 subset (rows with
    esc10 True), its classes ordered by target."""

    name = "esc50"
    EXPECTED = "CSV with header filename,fold,target,category,esc10,src_file,take"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("root", help="ESC-50 root holding meta/esc50.csv and audio/")
        parser.add_argument("--esc10", action="store_true", help="keep only the ESC-10 subset")

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        root = _require_dir(Path(args.root), "ESC-50 root (meta/esc50.csv, audio/)")
        meta = root / "meta" / "esc50.csv"
        rows = _read_csv_dicts(meta, ["filename", "fold", "target", "category"], ESC50Reader.EXPECTED)
        audio = _require_dir(root / "audio", "ESC-50 audio folder")
        failures: list[dict] = []
        good = []
        for ln, row in rows:
            fname = (row.get("filename") or "").strip()
            key = sanitize_key(Path(fname).stem) if fname else f"line{ln}"
            if None in row or any(row.get(c) is None for c in ("filename", "fold", "target", "category")):
                failures.append(
                    _failure(
                        key, None, "malformed_row", f"{meta}:{ln}: malformed row (wrong number of fields)"
                    )
                )
                continue
            try:
                fold, target = int(row["fold"]), int(row["target"])
            except ValueError:
                failures.append(
                    _failure(
                        key,
                        None,
                        "malformed_row",
                        f"{meta}:{ln}: malformed row: fold {row['fold']!r} / "
                        f"target {row['target']!r} not integers",
                    )
                )
                continue
            if not fname or not row["category"].strip():
                failures.append(
                    _failure(
                        key, None, "malformed_row", f"{meta}:{ln}: malformed row: empty filename or category"
                    )
                )
                continue
            if args.esc10 and str(row.get("esc10", "")).strip().lower() not in ("true", "1"):
                continue
            good.append((ln, fname, key, fold, target, row["category"].strip(), row))
        # vocabulary: target -> category, the first spelling wins, conflicts are row failures
        names: dict[int, str] = {}
        for _ln, _fname, _key, _fold, target, cat, _row in good:
            names.setdefault(target, cat)
        classes = [names[t] for t in sorted(names)]
        clips: list[Clip] = []
        sources: list[str] = []
        for ln, fname, key, fold, target, cat, row in good:
            if names[target] != cat:
                failures.append(
                    _failure(
                        key,
                        None,
                        "label_conflict",
                        f"{meta}:{ln}: category {cat!r} for target {target} conflicts with {names[target]!r}",
                    )
                )
                continue
            path = audio / fname
            if not path.is_file():
                failures.append(
                    _failure(key, str(path), "missing_file", "audio file not found", f"fold{fold}")
                )
                continue
            extra = {k: row[k] for k in ("esc10", "src_file", "take") if row.get(k) is not None}
            clips.append(
                Clip(
                    key,
                    [cat],
                    f"fold{fold}",
                    str(path.resolve()),
                    fold,
                    {"filename": fname, "target": target, **extra},
                )
            )
            sources.append(fname)
        dedupe_keys(clips, sources)
        name = "esc10" if args.esc10 else "esc50"
        return ReadResult(name, classes, False, clips, failures, "official folds (split = fold<k>)")


# ----------------------------------------------------------------------------------------------------
# (c) FSD50K


def _split_labels(field_value: str) -> list[str]:
    """Labels in one CSV field: separated by ``;`` if there is one, else by ``,``; blanks dropped."""
    sep = ";" if ";" in field_value else ","
    return [t.strip() for t in field_value.split(sep) if t.strip()]


class FSD50KReader:
    """FSD50K (FSD50K.ground_truth/, FSD50K.{dev,eval}_audio/); official train/val, eval -> test; multi-label.

    FSD50K (Fonseca et al. 2022): ``ROOT/FSD50K.ground_truth/{dev.csv, eval.csv, vocabulary.csv}``,
    audio in ``ROOT/FSD50K.dev_audio/<fname>.wav`` and ``ROOT/FSD50K.eval_audio/<fname>.wav``.
    ``vocabulary.csv`` has no header: ``index,label,mid``; classes are its labels in index order.
    ``dev.csv``: ``fname,labels,mids,split`` with split train/val (the official split); ``eval.csv``:
    ``fname,labels,mids`` -> split test. Labels are comma-separated in a quoted field; multi-label."""

    name = "fsd50k"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("root", help="FSD50K root holding FSD50K.ground_truth/, FSD50K.dev_audio/, ...")

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        root = _require_dir(Path(args.root), "FSD50K root (FSD50K.ground_truth/, FSD50K.dev_audio/, ...)")
        gt = root / "FSD50K.ground_truth"
        vocab_path = _require_file(gt / "vocabulary.csv", "CSV without header: index,label,mid")
        by_index: dict[int, str] = {}
        with open(vocab_path, newline="", encoding="utf-8-sig") as f:
            for ln, row in enumerate(csv.reader(f), 1):
                if not row:
                    continue
                try:
                    idx = int(row[0])
                    label = row[1].strip()
                except (ValueError, IndexError):
                    raise ReaderError(
                        f"{vocab_path}:{ln}: row {row!r} is not 'index,label,mid' (the file has no header)"
                    ) from None
                if idx in by_index or not label:
                    raise ReaderError(f"{vocab_path}:{ln}: duplicate index {idx} or empty label")
                by_index[idx] = label
        if sorted(by_index) != list(range(len(by_index))) or not by_index:
            raise ReaderError(f"{vocab_path}: indices must be 0..K-1 without gaps")
        classes = [by_index[i] for i in range(len(by_index))]
        known = set(classes)

        clips: list[Clip] = []
        failures: list[dict] = []
        sources: list[str] = []
        for csv_name, audio_dir, has_split in (
            ("dev.csv", "FSD50K.dev_audio", True),
            ("eval.csv", "FSD50K.eval_audio", False),
        ):
            path = gt / csv_name
            cols = ["fname", "labels", "split"] if has_split else ["fname", "labels"]
            rows = _read_csv_dicts(
                path,
                cols,
                "CSV with header " + ",".join(["fname", "labels", "mids"] + (["split"] if has_split else [])),
            )
            adir = root / audio_dir
            if not adir.is_dir():
                raise ReaderError(
                    f"FSD50K audio folder {str(adir)!r} does not exist (expected <fname>.wav there)"
                )
            for ln, row in rows:
                fname = (row.get("fname") or "").strip()
                key = sanitize_key(fname) if fname else f"{Path(csv_name).stem}-line{ln}"
                if None in row or any(row.get(c) is None for c in cols) or not fname:
                    failures.append(
                        _failure(
                            key,
                            None,
                            "malformed_row",
                            f"{path}:{ln}: malformed row (wrong number of fields or empty fname)",
                        )
                    )
                    continue
                if has_split:
                    split = row["split"].strip()
                    if split not in ("train", "val"):
                        failures.append(
                            _failure(
                                key,
                                None,
                                "malformed_row",
                                f"{path}:{ln}: malformed row: split {split!r} is not train or val",
                            )
                        )
                        continue
                else:
                    split = "test"
                labels = _split_labels(row["labels"])
                unknown = [lb for lb in labels if lb not in known]
                if not labels or unknown:
                    failures.append(
                        _failure(
                            key,
                            None,
                            "unknown_label" if unknown else "no_label",
                            f"{path}:{ln}: unknown label(s) {unknown!r}"
                            if unknown
                            else f"{path}:{ln}: no labels",
                            split,
                        )
                    )
                    continue
                wav = adir / f"{fname}.wav"
                if not wav.is_file():
                    failures.append(_failure(key, str(wav), "missing_file", "audio file not found", split))
                    continue
                clips.append(
                    Clip(
                        key,
                        labels,
                        split,
                        str(wav.resolve()),
                        None,
                        {"fname": fname, "mids": row.get("mids") or "", "source": csv_name},
                    )
                )
                sources.append(f"{csv_name}/{fname}")
        dedupe_keys(clips, sources)
        return ReadResult(
            "fsd50k", classes, True, clips, failures, "official split: dev.csv train/val, eval.csv -> test"
        )


# ----------------------------------------------------------------------------------------------------
# (d) AudioSet

_YTID = r"[A-Za-z0-9_-]{11}"
_AUDIOSET_NAME = re.compile(rf"^Y?({_YTID})(?:_(\d+(?:\.\d+)?)(?:[_-](\d+(?:\.\d+)?))?)?$")


def _index_audioset_audio(audio_dir: Path) -> dict[str, list[tuple[Path, float | None]]]:
    """YouTube id -> [(file, start in the name or None)] for every file below ``audio_dir``.

    Accepted names (any extension is indexed; only .wav/.flac/.ogg are used):
    ``<YTID>.wav``, ``Y<YTID>.wav`` (audioset_tagging_cnn, PANNs), ``<YTID>_<start>.wav`` and
    ``<YTID>_<start>_<end>.wav`` (start/end in seconds like ``30`` / ``30.000`` or milliseconds like
    ``30000``), each also with the ``Y`` prefix. YouTube ids are 11 characters of ``[A-Za-z0-9_-]``.
    """
    index: dict[str, list[tuple[Path, float | None]]] = defaultdict(list)
    for dp, _dns, fns in os.walk(audio_dir):
        for fn in fns:
            if fn.startswith("."):
                continue
            p = Path(dp) / fn
            m = _AUDIOSET_NAME.match(p.stem)
            if m:
                index[m.group(1)].append((p, float(m.group(2)) if m.group(2) else None))
            else:
                index[p.stem].append((p, None))
    return index


def _pick_audioset_file(cands: list[tuple[Path, float | None]], start: float) -> tuple[Path | None, str, str]:
    """The file for one segment, or (None, reason tag, detail)."""
    usable = [(p, s) for p, s in cands if p.suffix.lower() in AUDIO_EXTENSIONS]
    if not usable:
        if cands:
            exts = sorted({p.suffix for p, _ in cands})
            return (
                None,
                "unsupported_format",
                (
                    f"audio found only with unsupported extension(s) {exts} (expected "
                    f"{', '.join(AUDIO_EXTENSIONS)}): {cands[0][0]}"
                ),
            )
        return None, "missing_file", "no downloaded clip with this YouTube id"
    if len(usable) == 1:
        return usable[0][0], "", ""
    # several files for this id: prefer the one whose name carries this segment's start (s or ms)
    matching = [
        p for p, s in usable if s is not None and (abs(s - start) < 1e-3 or abs(s / 1000 - start) < 1e-3)
    ]
    if len(matching) == 1:
        return matching[0], "", ""
    plain = [p for p, s in usable if s is None]
    if not matching and len(plain) == 1:
        return plain[0], "", ""
    return None, "ambiguous_name", f"several files for this id {sorted(str(p) for p, _ in usable)}"


class AudioSetReader:
    """AudioSet (segment CSVs, class_labels_indices.csv, clips named by YouTube id); multi-label.

    AudioSet (Gemmeke et al. 2017): segment CSVs in the official format — lines starting with ``#``
    are comments, rows ``YTID, start_seconds, end_seconds, "mid1,mid2"`` — the ontology index
    ``class_labels_indices.csv`` (header ``index,mid,display_name``), and a folder of downloaded clips
    named by YouTube id (searched recursively; names accepted: see :func:`_index_audioset_audio`).

    ``--segments balanced_train_segments.csv:train eval_segments.csv:test ...`` maps CSVs to splits
    (relative paths are looked up in the working directory, then under ``root``). Classes are the
    display names in index order; labels are mapped from mids. A YouTube id listed again (in the same
    or another CSV) is a failure (kept in the first split), as are rows with unknown mids, malformed
    rows and clips that were not downloaded (AudioSet downloads always miss some; the count is in
    ``split_note``)."""

    name = "audioset"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("root", help="AudioSet root (holds the CSVs and the audio folder)")
        parser.add_argument(
            "--segments",
            nargs="+",
            required=True,
            metavar="CSV:SPLIT",
            help="segment CSVs and their splits, e.g. balanced_train_segments.csv:train "
            "eval_segments.csv:test",
        )
        parser.add_argument(
            "--labels-csv",
            default="class_labels_indices.csv",
            help="ontology index (index,mid,display_name), relative to root (default: %(default)s)",
        )
        parser.add_argument(
            "--audio-dir",
            default="audio",
            help="folder of downloaded clips, relative to root (default: %(default)s)",
        )

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        root = _require_dir(Path(args.root), "AudioSet root")
        labels_csv = Path(args.labels_csv)
        labels_csv = labels_csv if labels_csv.is_absolute() else root / labels_csv
        rows = _read_csv_dicts(
            labels_csv, ["index", "mid", "display_name"], "CSV with header index,mid,display_name"
        )
        by_index: dict[int, tuple[str, str]] = {}
        for ln, row in rows:
            try:
                idx = int(row["index"])
                mid, disp = row["mid"].strip(), row["display_name"].strip()
            except (ValueError, TypeError, AttributeError):
                raise ReaderError(f"{labels_csv}:{ln}: row {row!r} is not 'index,mid,display_name'") from None
            by_index[idx] = (mid, disp)
        if not by_index or sorted(by_index) != list(range(len(by_index))):
            raise ReaderError(f"{labels_csv}: indices must be 0..K-1 without gaps")
        classes = []
        for i in range(len(by_index)):  # a repeated display name gets its mid appended to stay unique
            mid, disp = by_index[i]
            classes.append(disp if disp not in classes else f"{disp} ({mid})")
        mid_to_name = {by_index[i][0]: classes[i] for i in range(len(classes))}
        if len(mid_to_name) != len(classes):
            raise ReaderError(f"{labels_csv}: mids are not unique")

        audio_dir = Path(args.audio_dir)
        audio_dir = audio_dir if audio_dir.is_absolute() else root / audio_dir
        _require_dir(audio_dir, "AudioSet audio folder (clips named by YouTube id)")
        index = _index_audioset_audio(audio_dir)

        clips: list[Clip] = []
        failures: list[dict] = []
        seen: dict[str, str] = {}
        missing = Counter()
        for spec in args.segments:
            if ":" not in spec:
                raise ReaderError(f"--segments {spec!r}: expected CSV:SPLIT, e.g. eval_segments.csv:test")
            csv_str, split = spec.rsplit(":", 1)
            seg = Path(csv_str)
            if not seg.is_file() and not seg.is_absolute() and (root / seg).is_file():
                seg = root / seg
            _require_file(
                seg, 'AudioSet segment CSV: "# comments", rows YTID, start_seconds, end_seconds, "mid1,mid2"'
            )
            n_rows = 0
            with open(seg, newline="", encoding="utf-8-sig") as f:
                lines = [
                    (ln, line) for ln, line in enumerate(f, 1) if line.strip() and not line.startswith("#")
                ]
            for ln, line in lines:
                row = next(csv.reader([line], skipinitialspace=True))
                n_rows += 1
                where = f"{seg}:{ln}"
                ytid = row[0].strip() if row else ""
                key = sanitize_key(ytid) if ytid else f"{seg.stem}-line{ln}"
                if len(row) != 4:
                    failures.append(
                        _failure(
                            key,
                            None,
                            "malformed_row",
                            f"{where}: malformed row, expected "
                            f'YTID, start_seconds, end_seconds, "mid1,mid2"; got {len(row)} fields',
                        )
                    )
                    continue
                try:
                    start, end = float(row[1]), float(row[2])
                except ValueError:
                    failures.append(
                        _failure(
                            key,
                            None,
                            "malformed_row",
                            f"{where}: malformed row: start/end {row[1]!r}, {row[2]!r} not numbers",
                        )
                    )
                    continue
                mids = [m.strip() for m in row[3].split(",") if m.strip()]
                unknown = [m for m in mids if m not in mid_to_name]
                if not mids or unknown:
                    failures.append(
                        _failure(
                            key,
                            None,
                            "unknown_label" if unknown else "no_label",
                            f"{where}: unknown label(s) (mids) {unknown!r}"
                            if unknown
                            else f"{where}: no labels",
                            split,
                        )
                    )
                    continue
                if ytid in seen:
                    failures.append(
                        _failure(
                            key,
                            None,
                            "duplicate",
                            f"{where}: duplicate YouTube id {ytid!r} (already in "
                            f"split {seen[ytid]!r}; kept there)",
                            split,
                        )
                    )
                    continue
                path, why_tag, why = _pick_audioset_file(index.get(ytid, []), start)
                if path is None:
                    missing[split] += why_tag == "missing_file"
                    failures.append(_failure(key, None, why_tag, f"{why} ({where})", split))
                    continue
                seen[ytid] = split
                labels = list(dict.fromkeys(mid_to_name[m] for m in mids))
                clips.append(
                    Clip(
                        key,
                        labels,
                        split,
                        str(path.resolve()),
                        None,
                        {"ytid": ytid, "start": start, "end": end, "mids": mids, "source": seg.name},
                    )
                )
            if n_rows == 0:
                raise ReaderError(
                    f"{seg}: no segment rows; expected lines YTID, start_seconds, end_seconds, "
                    '"mid1,mid2" after the # comments'
                )
        dedupe_keys(clips, [str(c.meta["ytid"]) for c in clips])
        note = "splits from segment CSVs: " + ", ".join(args.segments)
        if missing:
            note += "; clips not downloaded: " + ", ".join(f"{s} {n}" for s, n in sorted(missing.items()))
        return ReadResult("audioset", classes, True, clips, failures, note)


# ----------------------------------------------------------------------------------------------------
# (e) generic CSV manifest


class CSVReader:
    """A generic CSV manifest (path,labels[,split][,fold]); root = the manifest file.

    A generic manifest: a CSV with header ``path,labels[,split][,fold]`` (extra columns are kept in
    ``meta``). ``path`` is relative to the manifest's folder (or absolute). ``labels``: one or more
    class names; several go in a quoted field separated by ``;`` — or by ``,`` when the field has no
    ``;`` (so a class name containing a comma needs ``;`` separators). ``--classes FILE``: one class
    per line, in index order (blank lines and ``#`` comments ignored); rows with other labels are
    failures. Without it: the sorted union of the labels. Multi-label iff any row has more than one
    label, unless ``--multilabel`` / ``--no-multilabel``. ``split``: used as given; a row without
    split but with ``fold`` k gets split ``fold<k>``; the remaining rows get a seeded split
    stratified by their rarest label (``--val-fraction``, ``--test-fraction``, ``--seed``)."""

    name = "csv"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("root", help="manifest CSV with header path,labels[,split][,fold]")
        parser.add_argument(
            "--classes", default=None, help="text file of class names, one per line, in index order"
        )
        parser.add_argument(
            "--multilabel",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="multi-label or multi-class (default: multi-label iff a row has >1 label)",
        )
        parser.add_argument("--name", default=None, help="dataset name (default: the manifest's file stem)")
        _add_split_fraction_arguments(parser)

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        manifest = Path(args.root)
        expected = "CSV with header path,labels[,split][,fold]"
        rows = _read_csv_dicts(manifest, ["path", "labels"], expected)
        base = manifest.resolve().parent
        classes: list[str] | None = None
        if args.classes:
            cf = _require_file(Path(args.classes), "a text file of class names, one per line")
            classes = [
                ln.strip()
                for ln in cf.read_text(encoding="utf-8-sig").splitlines()
                if ln.strip() and not ln.strip().startswith("#")
            ]
            if not classes or len(set(classes)) != len(classes):
                raise ReaderError(
                    f"{cf}: expected one unique class name per line, got {len(classes)} names "
                    f"({len(classes) - len(set(classes))} duplicated)"
                )
        known = set(classes) if classes is not None else None

        failures: list[dict] = []
        parsed = []
        for ln, row in rows:
            rel = (row.get("path") or "").strip()
            key = sanitize_key(os.path.splitext(rel)[0]) if rel else f"line{ln}"
            where = f"{manifest}:{ln}"
            if None in row or row.get("labels") is None or not rel:
                failures.append(
                    _failure(
                        key,
                        None,
                        "malformed_row",
                        f"{where}: malformed row (wrong number of fields or empty path); expected {expected}",
                    )
                )
                continue
            labels = list(dict.fromkeys(_split_labels(row["labels"])))
            if not labels:
                failures.append(_failure(key, None, "no_label", f"{where}: no labels"))
                continue
            if known is not None and (unknown := [lb for lb in labels if lb not in known]):
                failures.append(
                    _failure(key, None, "unknown_label", f"{where}: unknown label(s) {unknown!r}")
                )
                continue
            fold = None
            fold_str = (row.get("fold") or "").strip()
            if fold_str:
                try:
                    fold = int(fold_str)
                except ValueError:
                    failures.append(
                        _failure(
                            key,
                            None,
                            "malformed_row",
                            f"{where}: malformed row: fold {fold_str!r} not an integer",
                        )
                    )
                    continue
            split = (row.get("split") or "").strip() or (f"fold{fold}" if fold is not None else "")
            path = Path(rel) if os.path.isabs(rel) else base / rel
            if not path.is_file():
                failures.append(
                    _failure(key, str(path), "missing_file", "audio file not found", split or None)
                )
                continue
            extra = {k: v for k, v in row.items() if k not in ("path", "labels", "split", "fold")}
            parsed.append((key, labels, split, str(path.resolve()), fold, {"path": rel, **extra}, rel))

        any_multi = any(len(p[1]) > 1 for p in parsed)
        multilabel = any_multi if args.multilabel is None else args.multilabel
        if not multilabel and any_multi:
            kept = []
            for p in parsed:
                if len(p[1]) > 1:
                    failures.append(
                        _failure(
                            p[0],
                            p[3],
                            "multiple_labels",
                            f"{len(p[1])} labels {p[1]!r} in a multi-class set (--no-multilabel)",
                        )
                    )
                else:
                    kept.append(p)
            parsed = kept
        if classes is None:
            classes = sorted({lb for p in parsed for lb in p[1]})
        clips = [Clip(k, lbs, s, path, fold, meta) for k, lbs, s, path, fold, meta, _rel in parsed]
        dedupe_keys(clips, [p[6] for p in parsed])

        note = "splits from the manifest"
        unsplit = [c for c in clips if not c.split]
        if unsplit:
            freq = Counter(lb for c in clips for lb in c.labels)
            strata = {c.key: min(c.labels, key=lambda lb: (freq[lb], lb)) for c in unsplit}
            assign = stratified_split(strata, args.val_fraction, args.test_fraction, args.seed)
            for c in unsplit:
                c.split = assign[c.key]
            note = (
                f"{len(clips) - len(unsplit)} rows split by the manifest; {len(unsplit)} by a seeded split "
                f"stratified by rarest label (val {args.val_fraction}, test {args.test_fraction}, "
                f"seed {args.seed})"
            )
        name = args.name or sanitize_key(manifest.stem)
        return ReadResult(name, classes, multilabel, clips, failures, note)


READERS: dict[str, type] = {
    "folder": FolderReader,
    "esc50": ESC50Reader,
    "fsd50k": FSD50KReader,
    "audioset": AudioSetReader,
    "csv": CSVReader,
}


def read_dataset(reader: str, argv: list[str]) -> ReadResult:
    """Convenience for tests and scripts: parse ``argv`` with the reader's arguments and read."""
    if reader not in READERS:
        raise ReaderError(f"unknown reader {reader!r}; expected one of {sorted(READERS)}")
    parser = argparse.ArgumentParser(prog=f"prepare {reader}")
    READERS[reader].add_arguments(parser)
    return READERS[reader].read(parser.parse_args(argv))
