"""The ``folder`` reader: a folder per class (GTZAN's ``genres/<genre>/<genre>.000NN.wav``); multi-class."""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

from datamodules.readers import base
from datamodules.readers.base import BaseReader, Clip, Failures, ReadResult, arg

#: Extensions collected by default (``.au`` is the original GTZAN format).
FOLDER_EXTENSIONS = (".wav", ".flac", ".ogg", ".au")


def _split_name_from_file(path: str) -> str:
    stem = Path(path).stem.lower()
    if "train" in stem:
        return "train"
    if "val" in stem or "dev" in stem:
        return "val"
    if "test" in stem or "eval" in stem:
        return "test"
    return base.sanitize_key(Path(path).stem)


def _parse_split_file_arg(value: str) -> tuple[str, str]:
    """``FILE`` or ``FILE:SPLIT`` -> (file, split); the split defaults to train/val/test by file name."""
    if ":" in value and not Path(value).exists():
        path, split = value.rsplit(":", 1)
        if split:
            return path, split
    return value, _split_name_from_file(value)


def _strip_ext(name: str, exts: set[str]) -> str:
    """Drop an audio extension (any of ``exts`` or the usual ones, so a list naming ``.au`` files
    matches the ``.wav`` conversions of GTZAN)."""
    p = Path(name)
    known = exts | set(FOLDER_EXTENSIONS) | {".mp3", ".aiff", ".aif"}
    return name[: -len(p.suffix)] if p.suffix.lower() in known else name


def _skip_reason(f: Path, exts: set[str]) -> tuple[str, str] | None:
    """(reason, detail) why file ``f`` of a class folder is not a clip, or None for a usable audio file."""
    if f.name.startswith("."):
        return "hidden_file", "hidden file: skipped"
    if f.suffix.lower() not in exts:
        return "unsupported_format", f"extension {f.suffix or '(none)'!r} is not one of {sorted(exts)} (--extensions)"
    try:
        f.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # a broken link; a symlink loop (RuntimeError before Python 3.13)
        return "unreadable", f"cannot resolve the file: {exc}"
    return None


def _class_files(root: Path, exts: set[str]) -> tuple[dict[str, list[Path]], Failures]:
    """Class name -> its audio files (recursive), for class folders holding audio; and a failure for every
    other file found in a class folder (hidden, unsupported extension, broken link or symlink loop) and
    every symlinked directory (not followed)."""
    files: dict[str, list[Path]] = {}
    skipped = Failures()
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = []
        for dp, dns, fns in os.walk(d):
            for dn in sorted(dn for dn in dns if (Path(dp) / dn).is_symlink()):
                skipped.add(base.sanitize_key(dn), "symlink_dir", "symlinked directory: not followed", str(Path(dp) / dn))
            for f in sorted(Path(dp) / fn for fn in fns):
                if (why := _skip_reason(f, exts)) is None:
                    found.append(f)
                else:
                    skipped.add(base.sanitize_key(f.stem), *why, str(f))
        if found:
            files[d.name] = sorted(found)
    if not files:
        raise base.ReaderError(
            f"{root}: no class folders with audio ({', '.join(sorted(exts))}) found; expected "
            "ROOT/<class>/<clip>.wav, e.g. genres/blues/blues.00000.wav"
        )
    return files, skipped


class _SplitFiles:
    """Assigns clips to splits from text files of clip names (see :class:`FolderReader`)."""

    def __init__(self, clips: list[Clip], sources: list[str], roots: tuple[Path, Path], exts: set[str]):
        self.clips, self.sources, self.roots, self.exts = clips, sources, roots, exts
        # lookup by relative path without extension, by "<class>/<stem>", and by stem
        self.by_rel: dict[str, list[int]] = defaultdict(list)
        self.by_stem: dict[str, list[int]] = defaultdict(list)
        for i, rel in enumerate(sources):
            self.by_rel[_strip_ext(rel, exts)].append(i)
            self.by_stem[Path(rel).stem].append(i)
        self.failures = Failures()

    def _hits(self, entry: str) -> list[int]:
        norm = _strip_ext(entry.replace("\\", "/").lstrip("./"), self.exts)
        parts = norm.split("/")
        return self.by_rel.get(norm) or self.by_rel.get("/".join(parts[-2:])) or self.by_stem.get(parts[-1], [])

    def _assign(self, entry: str, split: str, where: str) -> None:
        hits, root = self._hits(entry), self.roots[1]
        if not hits:
            self.failures.add(base.sanitize_key(entry), "missing_file",
                              f"{where}: {entry!r} listed for split {split!r} but no such audio file under {root}",
                              split=split)
        elif len(hits) > 1:
            self.failures.add(base.sanitize_key(entry), "ambiguous_name",
                              f"{where}: {entry!r} is ambiguous (matches {[self.sources[i] for i in hits]}); "
                              "give class/file", split=split)
        elif (c := self.clips[hits[0]]).split:
            self.failures.add(c.key, "duplicate", f"{where}: {entry!r} listed for split {split!r} but already "
                              f"in split {c.split!r}; kept in {c.split!r}", c.path, split)
        else:
            c.split = split

    def apply(self, split_files: list[str]) -> list[Clip]:
        """Read every ``FILE[:SPLIT]``; return the clips that got a split (the others are failures)."""
        for value in split_files:
            path_str, split = _parse_split_file_arg(value)
            sf = base.resolve_relative(path_str, *self.roots)  # relative names: working directory, then the root(s)
            expected = "a text file of clip names, one per line (e.g. blues.00000.wav)"
            for ln, entry in base.read_name_list(sf, expected, sep="\t"):  # also "path<TAB>label" lists
                self._assign(entry, split, f"{sf}:{ln}")
        for c in self.clips:
            if not c.split:
                self.failures.add(c.key, "not_in_split_files", "in no split file: skipped", c.path)
        return [c for c in self.clips if c.split]


class FolderReader(BaseReader):
    """A folder per class (GTZAN genres/<genre>/*.wav); multi-class.

    Layout: ``ROOT/<class>/<file>.{wav,flac,ogg,au}`` (GTZAN ``genres/<genre>/<genre>.000NN.wav``).

    ``root`` may be the folder of class folders or its parent holding ``genres/``. Classes are the
    sorted names of the class folders that contain audio (any depth below the class folder). Files
    are listed recursively; every file of a class folder that is not taken (hidden, another extension
    such as ``.mp3``, a broken link or symlink loop) and every symlinked directory (not followed) is a
    failure with its reason.

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
    arguments = (
        arg("root", help="folder of class folders (e.g. GTZAN 'genres/') or its parent"),
        arg("--split-files", nargs="+", default=None, metavar="FILE[:SPLIT]",
            help="text files of clip names per split (e.g. train.txt val.txt test.txt); "
            "default: seeded stratified split"),
        arg("--extensions", nargs="+", default=list(FOLDER_EXTENSIONS),
            help="audio file extensions to collect (default: %(default)s)"),
        arg("--name", default="folder", help="dataset name recorded in the output"),
        *base.SPLIT_FRACTION_ARGS,
    )

    @staticmethod
    def read(args: argparse.Namespace) -> ReadResult:
        """List the clips of every class folder, then split them by ``--split-files`` or a seeded split."""
        given_root = base.require_dir(Path(args.root), "folder reader root (class folders, e.g. GTZAN genres/)")
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in args.extensions}
        root = given_root / "genres" if (given_root / "genres").is_dir() else given_root  # GTZAN's parent
        files, skipped = _class_files(root, exts)
        classes = sorted(files)
        clips, sources = [], []
        for cls in classes:
            for f in files[cls]:
                rel = f.relative_to(root).as_posix()
                clips.append(Clip(key=base.sanitize_key(f.stem), labels=[cls], split="", path=str(f.resolve()),
                                  meta={"relpath": rel}))
                sources.append(rel)
        base.dedupe_keys(clips, sources)
        if args.split_files:
            splitter = _SplitFiles(clips, sources, (given_root, root), exts)
            clips = splitter.apply(args.split_files)
            return ReadResult(args.name, classes, False, clips, skipped + splitter.failures,
                              "splits from files: " + ", ".join(args.split_files))
        assign = base.stratified_split({c.key: c.labels[0] for c in clips}, args.val_fraction, args.test_fraction,
                                  args.seed)
        for c in clips:
            c.split = assign[c.key]
        note = base.seeded_split_note(args, "seeded stratified split per class") + (
            "; for GTZAN this is the leaky protocol: artists and recordings repeat across splits, so scores "
            "are optimistic (use --split-files for the fault-filtered split)")
        return ReadResult(args.name, classes, False, clips, skipped, note)
