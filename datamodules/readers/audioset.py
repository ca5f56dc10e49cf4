"""The ``audioset`` reader: AudioSet segment CSVs + ``class_labels_indices.csv`` + downloaded clips; multi-label."""

from __future__ import annotations

import argparse
import csv
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

from datamodules.readers import base
from datamodules.readers.base import BaseReader, Clip, Failures, ReadResult, arg

_YTID = r"[A-Za-z0-9_-]{11}"
_AUDIOSET_NAME = re.compile(rf"^Y?({_YTID})(?:_(\d+(?:\.\d+)?)(?:[_-](\d+(?:\.\d+)?))?)?$")
_SEGMENT_FORM = 'YTID, start_seconds, end_seconds, "mid1,mid2"'


def _read_ontology(path: Path) -> tuple[list[str], dict[str, str]]:
    """(class names in index order, mid -> class name) from ``class_labels_indices.csv``.

    A display name used twice gets its mid appended to stay unique."""
    rows = base.read_csv_rows(path, ["index", "mid", "display_name"], "CSV with header index,mid,display_name")
    by_index: dict[int, tuple[str, str]] = {}
    for ln, row in rows:
        try:
            by_index[int(row["index"])] = (row["mid"].strip(), row["display_name"].strip())
        except (ValueError, TypeError, AttributeError):
            raise base.ReaderError(f"{path}:{ln}: row {row!r} is not 'index,mid,display_name'") from None
    if not by_index or sorted(by_index) != list(range(len(by_index))):
        raise base.ReaderError(f"{path}: indices must be 0..K-1 without gaps")
    classes: list[str] = []
    for i in range(len(by_index)):
        mid, disp = by_index[i]
        classes.append(disp if disp not in classes else f"{disp} ({mid})")
    mid_to_name = {by_index[i][0]: classes[i] for i in range(len(classes))}
    if len(mid_to_name) != len(classes):
        raise base.ReaderError(f"{path}: mids are not unique")
    return classes, mid_to_name


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
    usable = [(p, s) for p, s in cands if p.suffix.lower() in base.AUDIO_EXTENSIONS]
    if not usable:
        if cands:
            exts = sorted({p.suffix for p, _ in cands})
            return (None, "unsupported_format", f"audio found only with unsupported extension(s) {exts} "
                    f"(expected {', '.join(base.AUDIO_EXTENSIONS)}): {cands[0][0]}")
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


class _Segments:
    """Reads segment CSVs into clips; a YouTube id is kept in the first split that lists it."""

    def __init__(self, mid_to_name: dict[str, str], index: dict):
        self.mid_to_name, self.index = mid_to_name, index
        self.clips: list[Clip] = []
        self.failures = Failures()
        self.seen: dict[str, str] = {}
        self.missing: Counter = Counter()

    def _row(self, row: list[str], split: str, seg: Path, ln: int) -> None:
        where = f"{seg}:{ln}"
        ytid = row[0].strip() if row else ""
        key = base.sanitize_key(ytid) if ytid else f"{seg.stem}-line{ln}"
        if len(row) != 4:
            self.failures.add(key, "malformed_row",
                              f"{where}: malformed row, expected {_SEGMENT_FORM}; got {len(row)} fields")
            return
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError:
            self.failures.add(key, "malformed_row",
                              f"{where}: malformed row: start/end {row[1]!r}, {row[2]!r} not numbers")
            return
        mids = [m.strip() for m in row[3].split(",") if m.strip()]
        unknown = [m for m in mids if m not in self.mid_to_name]
        if not mids or unknown:
            detail = f"{where}: unknown label(s) (mids) {unknown!r}" if unknown else f"{where}: no labels"
            self.failures.add(key, "unknown_label" if unknown else "no_label", detail, split=split)
            return
        if ytid in self.seen:
            self.failures.add(key, "duplicate", f"{where}: duplicate YouTube id {ytid!r} (already in split "
                              f"{self.seen[ytid]!r}; kept there)", split=split)
            return
        path, why_tag, why = _pick_audioset_file(self.index.get(ytid, []), start)
        if path is None:
            self.missing[split] += why_tag == "missing_file"
            self.failures.add(key, why_tag, f"{why} ({where})", split=split)
            return
        self.seen[ytid] = split
        labels = list(dict.fromkeys(self.mid_to_name[m] for m in mids))
        self.clips.append(Clip(key, labels, split, str(path.resolve()), None,
                               {"ytid": ytid, "start": start, "end": end, "mids": mids, "source": seg.name}))

    def read(self, spec: str, root: Path) -> None:
        """Read the segment CSV of ``spec`` = ``CSV:SPLIT`` (relative: working directory, then ``root``)."""
        if ":" not in spec:
            raise base.ReaderError(f"--segments {spec!r}: expected CSV:SPLIT, e.g. eval_segments.csv:test")
        csv_str, split = spec.rsplit(":", 1)
        expected = f'AudioSet segment CSV: "# comments", rows {_SEGMENT_FORM}'
        seg = base.require_file(base.resolve_relative(csv_str, root), expected)
        with open(seg, newline="", encoding="utf-8-sig") as f:
            lines = [(ln, line) for ln, line in enumerate(f, 1) if line.strip() and not line.startswith("#")]
        if not lines:
            raise base.ReaderError(f"{seg}: no segment rows; expected lines {_SEGMENT_FORM} after the # comments")
        for ln, line in lines:
            self._row(next(csv.reader([line], skipinitialspace=True)), split, seg, ln)


class AudioSetReader(BaseReader):
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
    arguments = (
        arg("root", help="AudioSet root (holds the CSVs and the audio folder)"),
        arg("--segments", nargs="+", required=True, metavar="CSV:SPLIT",
            help="segment CSVs and their splits, e.g. balanced_train_segments.csv:train eval_segments.csv:test"),
        arg("--labels-csv", default="class_labels_indices.csv",
            help="ontology index (index,mid,display_name), relative to root (default: %(default)s)"),
        arg("--audio-dir", default="audio",
            help="folder of downloaded clips, relative to root (default: %(default)s)"),
    )

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        """Read the ontology, index the downloaded clips, then read every segment CSV."""
        root = base.require_dir(Path(args.root), "AudioSet root")
        classes, mid_to_name = _read_ontology(base.under(root, args.labels_csv))
        audio_dir = base.require_dir(base.under(root, args.audio_dir),
                                     "AudioSet audio folder (clips named by YouTube id)")
        segments = _Segments(mid_to_name, _index_audioset_audio(audio_dir))
        for spec in args.segments:
            segments.read(spec, root)
        base.dedupe_keys(segments.clips, [str(c.meta["ytid"]) for c in segments.clips])
        note = "splits from segment CSVs: " + ", ".join(args.segments)
        if segments.missing:
            note += "; clips not downloaded: " + ", ".join(f"{s} {n}" for s, n in sorted(segments.missing.items()))
        return ReadResult("audioset", classes, True, segments.clips, segments.failures, note)
