"""The ``esc50`` reader: ESC-50 (``meta/esc50.csv`` + ``audio/``); split ``fold1``..``fold5``; multi-class."""

from __future__ import annotations

import argparse
from pathlib import Path

from datamodules.readers import base
from datamodules.readers.base import BaseReader, Clip, Failures, ReadResult, arg

EXPECTED = "CSV with header filename,fold,target,category,esc10,src_file,take"
_COLUMNS = ["filename", "fold", "target", "category"]


def _parse_rows(rows: list[tuple[int, dict]], meta: Path, esc10: bool, failures: Failures) -> list[tuple]:
    """Well-formed rows (of the ESC-10 subset with ``esc10``) as (line, filename, key, fold, target,
    category, row); the others are failures."""
    good = []
    for ln, row in rows:
        fname = (row.get("filename") or "").strip()
        key = base.sanitize_key(Path(fname).stem) if fname else f"line{ln}"
        if base.malformed(row, _COLUMNS):
            failures.add(key, "malformed_row", f"{meta}:{ln}: malformed row (wrong number of fields)")
            continue
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            failures.add(key, "malformed_row", f"{meta}:{ln}: malformed row: fold {row['fold']!r} / "
                         f"target {row['target']!r} not integers")
            continue
        if not fname or not row["category"].strip():
            failures.add(key, "malformed_row", f"{meta}:{ln}: malformed row: empty filename or category")
            continue
        if esc10 and str(row.get("esc10", "")).strip().lower() not in ("true", "1"):
            continue
        good.append((ln, fname, key, fold, target, row["category"].strip(), row))
    return good


class ESC50Reader(BaseReader):
    """ESC-50 (meta/esc50.csv, audio/); split = fold1..fold5; multi-class.

    ESC-50 (Piczak 2015): ``ROOT/meta/esc50.csv`` (filename,fold,target,category,esc10,src_file,take) and
    ``ROOT/audio/<filename>``. Classes are the categories ordered by ``target``; split is ``fold<fold>``
    (five-fold cross-validation). ``--esc10`` keeps the ESC-10 subset (rows with esc10 True), its classes
    ordered by target."""

    name = "esc50"
    EXPECTED = EXPECTED
    arguments = (
        arg("root", help="ESC-50 root holding meta/esc50.csv and audio/"),
        arg("--esc10", action="store_true", help="keep only the ESC-10 subset"),
    )

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        """Parse the metadata rows, build the target -> category vocabulary, then the clips."""
        root = base.require_dir(Path(args.root), "ESC-50 root (meta/esc50.csv, audio/)")
        meta = root / "meta" / "esc50.csv"
        rows = base.read_csv_rows(meta, _COLUMNS, EXPECTED)
        audio = base.require_dir(root / "audio", "ESC-50 audio folder")
        failures = Failures()
        good = _parse_rows(rows, meta, args.esc10, failures)
        names: dict[int, str] = {}  # vocabulary: target -> category, the first spelling wins
        for _ln, _fname, _key, _fold, target, cat, _row in good:
            names.setdefault(target, cat)
        classes = [names[t] for t in sorted(names)]
        clips, sources = [], []
        for ln, fname, key, fold, target, cat, row in good:
            path = audio / fname
            if names[target] != cat:
                failures.add(key, "label_conflict",
                             f"{meta}:{ln}: category {cat!r} for target {target} conflicts with {names[target]!r}")
            elif not path.is_file():
                failures.add(key, "missing_file", "audio file not found", str(path), f"fold{fold}")
            else:
                extra = {k: row[k] for k in ("esc10", "src_file", "take") if row.get(k) is not None}
                clips.append(Clip(key, [cat], f"fold{fold}", str(path.resolve()), fold,
                                  {"filename": fname, "target": target, **extra}))
                sources.append(fname)
        base.dedupe_keys(clips, sources)
        return ReadResult("esc10" if args.esc10 else "esc50", classes, False, clips, failures,
                          "official folds (split = fold<k>)")
