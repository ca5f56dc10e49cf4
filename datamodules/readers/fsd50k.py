"""The ``fsd50k`` reader: FSD50K with its official train/val split, eval -> test; multi-label."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from datamodules.readers import base
from datamodules.readers.base import BaseReader, Clip, Failures, ReadResult, arg

#: (ground-truth CSV, audio folder, whether the CSV has a split column)
_PARTS = (("dev.csv", "FSD50K.dev_audio", True), ("eval.csv", "FSD50K.eval_audio", False))


def _read_vocabulary(path: Path) -> list[str]:
    """Class names in index order from ``vocabulary.csv`` (no header: ``index,label,mid``)."""
    base.require_file(path, "CSV without header: index,label,mid")
    by_index: dict[int, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for ln, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            try:
                idx, label = int(row[0]), row[1].strip()
            except (ValueError, IndexError):
                raise base.ReaderError(
                    f"{path}:{ln}: row {row!r} is not 'index,label,mid' (the file has no header)"
                ) from None
            if idx in by_index or not label:
                raise base.ReaderError(f"{path}:{ln}: duplicate index {idx} or empty label")
            by_index[idx] = label
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        raise base.ReaderError(f"{path}: indices must be 0..K-1 without gaps")
    return [by_index[i] for i in range(len(by_index))]


def _row_clip(row: dict, ln: int, path: Path, adir: Path, has_split: bool, known: set[str],
              failures: Failures) -> Clip | None:
    """The clip of one ground-truth row, or None (and a failure)."""
    fname = (row.get("fname") or "").strip()
    key = base.sanitize_key(fname) if fname else f"{path.stem}-line{ln}"
    cols = ["fname", "labels", "split"] if has_split else ["fname", "labels"]
    if base.malformed(row, cols) or not fname:
        failures.add(key, "malformed_row", f"{path}:{ln}: malformed row (wrong number of fields or empty fname)")
        return None
    split = row["split"].strip() if has_split else "test"
    if has_split and split not in ("train", "val"):
        failures.add(key, "malformed_row", f"{path}:{ln}: malformed row: split {split!r} is not train or val")
        return None
    labels = base.split_labels(row["labels"])
    unknown = [lb for lb in labels if lb not in known]
    if not labels or unknown:
        detail = f"{path}:{ln}: unknown label(s) {unknown!r}" if unknown else f"{path}:{ln}: no labels"
        failures.add(key, "unknown_label" if unknown else "no_label", detail, split=split)
        return None
    wav = adir / f"{fname}.wav"
    if not wav.is_file():
        failures.add(key, "missing_file", "audio file not found", str(wav), split)
        return None
    return Clip(key, labels, split, str(wav.resolve()), None,
                {"fname": fname, "mids": row.get("mids") or "", "source": path.name})


class FSD50KReader(BaseReader):
    """FSD50K (FSD50K.ground_truth/, FSD50K.{dev,eval}_audio/); official train/val, eval -> test; multi-label.

    FSD50K (Fonseca et al. 2022): ``ROOT/FSD50K.ground_truth/{dev.csv, eval.csv, vocabulary.csv}``,
    audio in ``ROOT/FSD50K.dev_audio/<fname>.wav`` and ``ROOT/FSD50K.eval_audio/<fname>.wav``.
    ``vocabulary.csv`` has no header: ``index,label,mid``; classes are its labels in index order.
    ``dev.csv``: ``fname,labels,mids,split`` with split train/val (the official split); ``eval.csv``:
    ``fname,labels,mids`` -> split test. Labels are comma-separated in a quoted field; multi-label."""

    name = "fsd50k"
    arguments = (arg("root", help="FSD50K root holding FSD50K.ground_truth/, FSD50K.dev_audio/, ..."),)

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        """Read the vocabulary, then the clips of dev.csv (train/val) and eval.csv (test)."""
        root = base.require_dir(Path(args.root), "FSD50K root (FSD50K.ground_truth/, FSD50K.dev_audio/, ...)")
        gt = root / "FSD50K.ground_truth"
        classes = _read_vocabulary(gt / "vocabulary.csv")
        clips, sources, failures = [], [], Failures()
        for csv_name, audio_dir, has_split in _PARTS:
            path = gt / csv_name
            header = ["fname", "labels", "mids"] + (["split"] if has_split else [])
            rows = base.read_csv_rows(path, ["fname", "labels"] + (["split"] if has_split else []),
                                 "CSV with header " + ",".join(header))
            adir = root / audio_dir
            if not adir.is_dir():
                raise base.ReaderError(f"FSD50K audio folder {str(adir)!r} does not exist (expected <fname>.wav there)")
            for ln, row in rows:
                clip = _row_clip(row, ln, path, adir, has_split, set(classes), failures)
                if clip is not None:
                    clips.append(clip)
                    sources.append(f"{csv_name}/{clip.meta['fname']}")
        base.dedupe_keys(clips, sources)
        return ReadResult("fsd50k", classes, True, clips, failures,
                          "official split: dev.csv train/val, eval.csv -> test")
