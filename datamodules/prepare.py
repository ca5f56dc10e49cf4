"""``prepare``: raw audio + labels -> webdataset shards of log-mel and ``dataset.json``.

    python -m datamodules.prepare READER [reader options] --out DIR [--workers N] [--shard-size N]
    audiognn-prepare READER ...            (the same, as a console script)

Readers (``datamodules.readers.READERS``): ``folder`` (GTZAN layout), ``esc50``, ``urbansound8k``, ``fsd50k``, ``audioset``,
``csv`` and ``synthetic``. Every clip becomes one sample in a shard named ``<split>-NNNNNN.tar``:
``__key__``, ``mel.npy`` (float16 ``[T, F]``) and ``json`` (label indices, split, fold, source path, valid
frames, reader metadata); ``dataset.json`` beside the shards holds the classes, multi-label flag, per-split
shard lists with per-shard clip counts, the feature parameters and the normalisation statistics (the format:
:mod:`audiognn.data.shards`; the writer: :mod:`datamodules.shard_writer`).

Bad clips (unreadable, truncated, empty, silent or non-finite audio, unsupported format, unknown label) are
skipped and listed in ``failures.jsonl`` with their reason; every good clip is still written. The exit code
is 1 when nothing was written, or with ``--strict`` when anything failed; 2 when the reader fails or the
output directory cannot be written (one line naming it: a file, read-only, a full disk); 130 on Ctrl-C.
An interrupted or failed run removes its partial output and leaves the previous set in ``--out`` intact;
other files in ``--out`` (a backup ``.tar``, another set's shards) are never touched.

Output is idempotent: the same input gives byte-identical shards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiognn.data.shards import FORMAT_VERSION
from audiognn.features import FeatureConfig
from datamodules.readers import READERS, SyntheticReader, synthetic_result
from datamodules.readers.base import arg
from datamodules.shard_writer import Summary, check_output_dir, prepare

#: Output options every reader gets (defaults: LHGNN, Singh et al., §III-A: 1024 frames, 128 bins, 16 kHz).
OUTPUT_ARGS = (
    arg("--out", required=True, help="output directory for shards, dataset.json, failures.jsonl"),
    arg("--workers", type=int, default=None, help="feature processes (default: min(4, cores))"),
    arg("--shard-size", type=int, default=256,
        help="clips per shard (make many more shards than GPUs x workers)"),
    arg("--target-frames", type=int, default=1024,
        help="frames per clip (default: the reader's clip length where it declares one, e.g. urbansound8k 400 "
             "= 4 s; else LHGNN §III-A's 1024)"),
    arg("--num-mel-bins", type=int, default=128, help="mel bins (LHGNN §III-A: 128)"),
    arg("--sample-rate", type=int, default=16000, help="resample to this rate (LHGNN §III-A: 16 kHz)"),
    arg("--strict", action="store_true", help="exit non-zero when any clip failed"),
    arg("--quiet", action="store_true", help="no progress bar"),
)


def all_readers() -> dict:
    """Every reader by name (the registry; kept for callers of the former name)."""
    return dict(READERS)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per reader, each with its own and the output options."""
    parser = argparse.ArgumentParser(prog="audiognn-prepare", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="reader", required=True, metavar="READER")
    for name, reader in READERS.items():
        p = sub.add_parser(name, help=(reader.__doc__ or name).strip().split("\n")[0])
        reader.add_arguments(p)
        group = p.add_argument_group("output")
        for a in OUTPUT_ARGS:
            group.add_argument(*a.flags, **a.kwargs)
        if getattr(reader, "target_frames", None):  # a dataset of known clip length: pad it to that, not 10 s
            p.set_defaults(target_frames=reader.target_frames)
    return parser


def _source(args: argparse.Namespace) -> dict:
    """The reader arguments recorded in dataset.json."""
    kept = (str, int, float, bool, list, Path, type(None))
    return {"reader": args.reader, **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                      if k not in ("out", "quiet") and isinstance(v, kept)}}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 written, 1 nothing written or ``--strict``, 2 error,
    130 interrupted)."""
    args = build_parser().parse_args(argv)
    cfg = FeatureConfig(sample_rate=args.sample_rate, num_mel_bins=args.num_mel_bins, target_frames=args.target_frames)
    try:
        check_output_dir(args.out)  # before reading or featurising anything
        result = READERS[args.reader].read(args)
        summary = prepare(result, args.out, cfg, workers=args.workers, shard_size=args.shard_size,
                          progress=not args.quiet, source=_source(args))
    except KeyboardInterrupt:
        print(f"interrupted: partial output removed; the previous set in {args.out} is unchanged", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:  # a reader's missing input, an unusable --out, a full disk
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary)
    if warning := summary.padding_warning():
        print(warning, file=sys.stderr)
    if summary.total == 0:
        print("error: no clip was written", file=sys.stderr)
        return 1
    if args.strict and summary.failures:
        return 1
    return 0


__all__ = ["FORMAT_VERSION", "OUTPUT_ARGS", "Summary", "SyntheticReader", "all_readers", "build_parser", "main",
           "prepare", "synthetic_result"]

if __name__ == "__main__":
    sys.exit(main())
