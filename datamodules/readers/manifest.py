"""The ``csv`` reader: a generic CSV manifest ``path,labels[,split][,fold]``."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

from datamodules.readers import base
from datamodules.readers.base import BaseReader, Clip, Failures, ReadResult, arg

EXPECTED = "CSV with header path,labels[,split][,fold]"


def _read_classes(path: str) -> list[str]:
    """Class names of ``--classes``: one unique name per line, in index order."""
    classes = [name for _ln, name in base.read_name_list(Path(path), "a text file of class names, one per line")]
    if not classes or len(set(classes)) != len(classes):
        raise base.ReaderError(
            f"{Path(path)}: expected one unique class name per line, got {len(classes)} names "
            f"({len(classes) - len(set(classes))} duplicated)"
        )
    return classes


def _row_clip(row: dict, ln: int, manifest: Path, folder: Path, known: set[str] | None,
              failures: Failures) -> tuple[Clip, str] | None:
    """(clip, its path as written) of one manifest row, or None (and a failure)."""
    rel = (row.get("path") or "").strip()
    key = base.sanitize_key(os.path.splitext(rel)[0]) if rel else f"line{ln}"
    where = f"{manifest}:{ln}"
    if None in row or row.get("labels") is None or not rel:
        failures.add(key, "malformed_row",
                     f"{where}: malformed row (wrong number of fields or empty path); expected {EXPECTED}")
        return None
    labels = list(dict.fromkeys(base.split_labels(row["labels"])))
    if not labels:
        failures.add(key, "no_label", f"{where}: no labels")
        return None
    if known is not None and (unknown := [lb for lb in labels if lb not in known]):
        failures.add(key, "unknown_label", f"{where}: unknown label(s) {unknown!r}")
        return None
    fold_str = (row.get("fold") or "").strip()
    try:
        fold = int(fold_str) if fold_str else None
    except ValueError:
        failures.add(key, "malformed_row", f"{where}: malformed row: fold {fold_str!r} not an integer")
        return None
    split = (row.get("split") or "").strip() or (f"fold{fold}" if fold is not None else "")
    path = Path(rel) if os.path.isabs(rel) else folder / rel
    if not path.is_file():
        failures.add(key, "missing_file", "audio file not found", str(path), split or None)
        return None
    extra = {k: v for k, v in row.items() if k not in ("path", "labels", "split", "fold")}
    return Clip(key, labels, split, str(path.resolve()), fold, {"path": rel, **extra}), rel


def _keep_single_labels(parsed: list[tuple[Clip, str]], failures: Failures) -> list[tuple[Clip, str]]:
    """Drop (as failures) the rows with several labels from a multi-class set."""
    for c, _rel in parsed:
        if len(c.labels) > 1:
            failures.add(c.key, "multiple_labels",
                         f"{len(c.labels)} labels {c.labels!r} in a multi-class set (--no-multilabel)", c.path)
    return [p for p in parsed if len(p[0].labels) <= 1]


class CSVReader(BaseReader):
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
    arguments = (
        arg("root", help="manifest CSV with header path,labels[,split][,fold]"),
        arg("--classes", default=None, help="text file of class names, one per line, in index order"),
        arg("--multilabel", action=argparse.BooleanOptionalAction, default=None,
            help="multi-label or multi-class (default: multi-label iff a row has >1 label)"),
        arg("--name", default=None, help="dataset name (default: the manifest's file stem)"),
        *base.SPLIT_FRACTION_ARGS,
    )

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        """Parse the rows, settle multi-label and the vocabulary, then split the rows without a split."""
        manifest = Path(args.root)
        rows = base.read_csv_rows(manifest, ["path", "labels"], EXPECTED)
        folder = manifest.resolve().parent
        classes = _read_classes(args.classes) if args.classes else None
        known = set(classes) if classes is not None else None
        failures = Failures()
        parsed = [p for ln, row in rows if (p := _row_clip(row, ln, manifest, folder, known, failures))]
        any_multi = any(len(c.labels) > 1 for c, _rel in parsed)
        multilabel = any_multi if args.multilabel is None else args.multilabel
        if not multilabel and any_multi:
            parsed = _keep_single_labels(parsed, failures)
        clips = [c for c, _rel in parsed]
        if classes is None:
            classes = sorted({lb for c in clips for lb in c.labels})
        base.dedupe_keys(clips, [rel for _c, rel in parsed])
        note = "splits from the manifest"
        unsplit = [c for c in clips if not c.split]
        if unsplit:
            freq = Counter(lb for c in clips for lb in c.labels)
            strata = {c.key: min(c.labels, key=lambda lb: (freq[lb], lb)) for c in unsplit}
            assign = base.stratified_split(strata, args.val_fraction, args.test_fraction, args.seed)
            for c in unsplit:
                c.split = assign[c.key]
            note = f"{len(clips) - len(unsplit)} rows split by the manifest; " + base.seeded_split_note(
                args, f"{len(unsplit)} by a seeded split stratified by rarest label")
        return ReadResult(args.name or base.sanitize_key(manifest.stem), classes, multilabel, clips, failures, note)
