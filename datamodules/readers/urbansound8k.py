"""The ``urbansound8k`` reader: UrbanSound8K's own layout; split ``fold1``..``fold10``; multi-class.

UrbanSound8K (Salamon, Jacoby and Bello, *A Dataset and Taxonomy for Urban Sound Research*, ACM MM 2014):
``ROOT/metadata/UrbanSound8K.csv`` with the columns ``slice_file_name, fsID, start, end, salience, fold,
classID, class`` and the audio in ``ROOT/audio/fold<N>/<slice_file_name>``. Only ``slice_file_name``,
``fold``, ``classID`` and ``class`` are required (a subset without ``start, end, salience`` reads the same).
The split of a clip is ``fold<N>`` exactly as the metadata gives it: the dataset's protocol is
cross-validation over these predefined folds (slices of one recording never cross folds), so the reader
never re-splits. Classes are ordered by ``classID``; clips of every fold present are listed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from datamodules.readers import base
from datamodules.readers.base import BaseReader, Clip, Failures, ReadResult, arg

EXPECTED = "CSV with header slice_file_name,fsID,start,end,salience,fold,classID,class"
_COLUMNS = ["slice_file_name", "fold", "classID", "class"]
_EXTRA = ("fsID", "start", "end", "salience")


def _row_fields(ln: int, row: dict, meta: Path, failures: Failures) -> tuple[str, str, int, int, str] | None:
    """(file name, key, fold, class id, class name) of a metadata row, or None (recorded as a failure)."""
    fname = (row.get("slice_file_name") or "").strip()
    key = base.sanitize_key(Path(fname).stem) if fname else f"line{ln}"
    where = f"{meta}:{ln}"
    if base.malformed(row, _COLUMNS):
        failures.add(key, "malformed_row", f"{where}: malformed row (wrong number of fields)")
        return None
    try:
        fold, class_id = int(row["fold"]), int(row["classID"])
    except ValueError:
        failures.add(key, "malformed_row", f"{where}: fold {row['fold']!r} / classID {row['classID']!r} "
                     "are not integers")
        return None
    name = row["class"].strip()
    if not fname or not name:
        failures.add(key, "malformed_row", f"{where}: empty slice_file_name or class")
        return None
    return fname, key, fold, class_id, name


def _layout(root: Path) -> tuple[Path, list[tuple[int, dict]], Path]:
    """(metadata file, its rows, audio folder) of an UrbanSound8K root; :class:`ReaderError` when missing."""
    base.require_dir(root, "UrbanSound8K root (metadata/UrbanSound8K.csv, audio/)")
    meta = root / "metadata" / "UrbanSound8K.csv"
    rows = base.read_csv_rows(meta, _COLUMNS, EXPECTED)
    return meta, rows, base.require_dir(root / "audio", "UrbanSound8K audio folder (audio/fold<N>/)")


class UrbanSound8KReader(BaseReader):
    """UrbanSound8K (metadata/UrbanSound8K.csv, audio/fold<N>/); split = fold<N> as in the metadata.

    Works on the full public set (8,732 clips, folds 1-10) and on any subset in the same layout.
    ``--folds`` keeps only the listed folds (e.g. ``--folds 1 2 3``)."""

    name = "urbansound8k"
    EXPECTED = EXPECTED
    #: Frames per clip that fit the dataset: its clips are at most 4 s = 400 frames of 10 ms.
    target_frames = 400
    arguments = (
        arg("root", help="UrbanSound8K root holding metadata/UrbanSound8K.csv and audio/fold<N>/"),
        arg("--folds", type=int, nargs="+", default=None, help="keep only these folds (default: all)"),
    )

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        """Parse the metadata, build the classID -> class vocabulary, then list each fold's clips."""
        meta, rows, audio = _layout(Path(args.root))
        keep, failures, parsed = (set(args.folds) if args.folds else None), Failures(), []
        for ln, row in rows:
            fields = _row_fields(ln, row, meta, failures)
            if fields is not None and (keep is None or fields[2] in keep):
                parsed.append((ln, row, *fields))
        vocab: dict[int, str] = {}  # classID -> class name, the first spelling wins
        for *_, class_id, name in parsed:
            vocab.setdefault(class_id, name)
        clips, sources = [], []
        for ln, row, fname, key, fold, class_id, name in parsed:
            path = audio / f"fold{fold}" / fname
            split = f"fold{fold}"
            if vocab[class_id] != name:
                failures.add(key, "label_conflict",
                             f"{meta}:{ln}: class {name!r} for classID {class_id} conflicts with {vocab[class_id]!r}")
            elif not path.is_file():
                failures.add(key, "missing_file", "audio file not found", str(path), split)
            else:
                extra = {k: row[k].strip() for k in _EXTRA if row.get(k) is not None}
                clips.append(Clip(key, [name], split, str(path.resolve()), fold,
                                  {"filename": fname, "classID": class_id, **extra}))
                sources.append(f"fold{fold}/{fname}")
        base.dedupe_keys(clips, sources)
        return ReadResult("urbansound8k", [vocab[c] for c in sorted(vocab)], False, clips, failures,
                          "official folds (split = fold<N>); cross-validate over them, never re-split")
