"""``prepare``: raw audio + labels -> webdataset shards of log-mel and ``dataset.json``.

    python -m datamodules.prepare READER [reader options] --out DIR [--workers N] [--shard-size N]
    audiognn-prepare READER ...            (the same, as a console script)

Readers: ``folder`` (GTZAN layout), ``esc50``, ``fsd50k``, ``audioset``, ``csv`` (datamodules/readers.py) and
``synthetic`` (datamodules/synthetic.py). Every clip becomes one sample in a shard named
``<split>-NNNNNN.tar``: ``__key__``, ``mel.npy`` (float16 ``[T, F]``) and ``json`` (label indices, split,
fold, source path, valid frames, reader metadata). ``dataset.json`` beside the shards holds the classes,
multi-label flag, per-split shard lists with per-shard clip counts, the feature parameters and the
normalisation statistics (mean/std of the log-mel over the valid frames of the training split; when the
reader has no split named ``train`` — ESC-50's folds — over every clip, which leaks nothing a fold split
cares about beyond two scalars).

Bad clips (unreadable, truncated, empty, silent or non-finite audio, unsupported format, unknown label) are
skipped and listed in ``failures.jsonl`` with their reason; every good clip is still written. The exit code
is 1 when nothing was written, or with ``--strict`` when anything failed.

Output is idempotent: the shards are assembled in a temporary directory and swapped in at the end, clips
are written in key order with a fixed tar mtime, so the same input gives byte-identical shards.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audiognn.features import AudioError, FeatureConfig

FORMAT_VERSION = 1


@dataclass
class Summary:
    out: Path
    written: dict[str, int] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.written.values())

    def __str__(self) -> str:
        per = ", ".join(f"{s}: {n}" for s, n in sorted(self.written.items())) or "none"
        reasons: dict[str, int] = defaultdict(int)
        for f in self.failures:
            reasons[f["reason"]] += 1
        bad = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
        return (
            f"wrote {self.total} clips to {self.out} ({per}); {len(self.failures)} failed"
            + (f" ({bad}; see {self.out / 'failures.jsonl'})" if self.failures else "")
        )


# --- the synthetic reader (the others live in datamodules/readers.py) ---------------------------------
class SyntheticReader:
    name = "synthetic"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--variant", choices=["genre", "events"], default="genre")
        p.add_argument("--train", type=int, default=800, help="clips in the train split")
        p.add_argument("--val", type=int, default=200, help="clips in the val split")
        p.add_argument("--test", type=int, default=200, help="clips in the test split")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--difficulty", type=float, default=0.0,
                       help="genre only: probability that each attribute comes from another class (0 = clean)")

    @staticmethod
    def read(args: argparse.Namespace):
        return synthetic_result(args.variant, args.train, args.val, args.test, args.seed, args.difficulty)


def synthetic_result(variant: str, train: int, val: int, test: int, seed: int = 0, difficulty: float = 0.0):
    from datamodules.readers import Clip, ReadResult
    from datamodules.synthetic import VARIANTS

    classes, multilabel = VARIANTS[variant]
    clips, i = [], 0
    for split, n in (("train", train), ("val", val), ("test", test)):
        for _ in range(n):
            clips.append(
                Clip(
                    key=f"{variant}-{i:06d}",
                    labels=[],  # filled by the generator at feature time
                    split=split,
                    meta={"synthetic": {"variant": variant, "index": i, "seed": seed, "difficulty": difficulty}},
                )
            )
            i += 1
    return ReadResult(name=f"synthetic-{variant}", classes=list(classes), multilabel=multilabel, clips=clips, failures=[])


def all_readers() -> dict:
    from datamodules.readers import READERS

    return {**READERS, "synthetic": SyntheticReader}


# --- feature worker -----------------------------------------------------------------------------------
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _featurize(job: tuple[dict, dict]) -> dict:
    """One clip -> {"key", "mel" (float16 [T, F]), "valid", "labels"} or {"key", "reason", ...}."""
    from audiognn.features import extract

    clip, cfgd = job
    cfg = FeatureConfig.from_dict(cfgd)
    try:
        syn = clip["meta"].get("synthetic")
        if syn is not None:
            from datamodules.synthetic import SR, synth_clip

            wave, labels = synth_clip(syn["variant"], syn["index"], cfg.clip_seconds, syn["seed"],
                                      syn.get("difficulty", 0.0))
            mel, valid = extract((wave, SR), cfg)
            clip = {**clip, "label_idx": labels}
        else:
            mel, valid = extract(clip["path"], cfg)
    except AudioError as exc:
        return {"key": clip["key"], "path": clip.get("path"), "split": clip["split"], "reason": exc.reason, "detail": exc.detail}
    except Exception as exc:  # a reader bug or an exotic decoder failure must not lose the other clips
        return {"key": clip["key"], "path": clip.get("path"), "split": clip["split"], "reason": "error", "detail": repr(exc)}
    m = mel.numpy()
    return {"key": clip["key"], "mel": m.astype(np.float16), "valid": valid, "label_idx": clip["label_idx"],
            "sum": float(m[:valid].astype(np.float64).sum()), "sumsq": float((m[:valid].astype(np.float64) ** 2).sum()),
            "count": valid * m.shape[1]}


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def prepare(result, out: str | Path, cfg: FeatureConfig = FeatureConfig(), workers: int | None = None,
            shard_size: int = 256, progress: bool = True, source: dict | None = None) -> Summary:
    """Featurise every clip of a reader's ``result`` and write shards + dataset.json + failures.jsonl to ``out``."""
    import webdataset as wds
    from tqdm import tqdm

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cls_index = {c: i for i, c in enumerate(result.classes)}
    failures = list(result.failures)
    by_split: dict[str, list[dict]] = defaultdict(list)
    for c in result.clips:
        unknown = [lab for lab in c.labels if lab not in cls_index]
        if unknown:
            failures.append({"key": c.key, "path": c.path, "split": c.split, "reason": "unknown_label",
                             "detail": f"labels {unknown} are not in the {len(cls_index)} classes"})
            continue
        if not c.labels and "synthetic" not in c.meta:
            failures.append({"key": c.key, "path": c.path, "split": c.split, "reason": "no_label", "detail": ""})
            continue
        # webdataset splits member names at the first dot (key.mel.npy): keys must not contain dots
        by_split[c.split].append({"key": c.key.replace(".", "_"), "path": c.path, "split": c.split, "fold": c.fold, "meta": c.meta,
                                  "label_idx": sorted(cls_index[lab] for lab in c.labels)})
    keys = [c["key"] for cs in by_split.values() for c in cs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError(f"reader '{result.name}' produced duplicate clip keys, e.g. {dup}: keys must be unique")

    norm_splits = ["train"] if "train" in by_split else sorted(by_split)
    stats = np.zeros(3)  # sum, sum of squares, count (float64)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    splits_meta: dict[str, dict] = {}
    workers = workers or min(4, os.cpu_count() or 1)
    total = sum(len(v) for v in by_split.values())
    bar = tqdm(total=total, desc=f"prepare {result.name}", unit="clip", disable=not progress)
    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker) if workers > 1 else None
    try:
        for split in sorted(by_split):
            clips = sorted(by_split[split], key=lambda c: c["key"])
            meta_of = {c["key"]: c for c in clips}
            jobs = [(c, cfg.to_dict()) for c in clips]
            it = pool.imap(_featurize, jobs, chunksize=4) if pool else map(_featurize, jobs)
            shards, counts, writer, fh = [], [], None, None
            # USTAR headers (no pax records to parse per member when reading) hold names of <= 100 bytes
            tar_format = tarfile.USTAR_FORMAT if max(len(c["key"]) for c in clips) <= 80 else tarfile.PAX_FORMAT
            for r in it:
                bar.update(1)
                if "reason" in r:
                    failures.append(r)
                    continue
                if writer is None or counts[-1] >= shard_size:
                    if writer is not None:
                        writer.close()
                        fh.close()
                    name = f"{split}-{len(shards):06d}.tar"
                    fh = open(tmp / name, "wb")
                    writer = wds.TarWriter(fh, encoder=False, mtime=0.0, format=tar_format)
                    shards.append(name)
                    counts.append(0)
                c = meta_of[r["key"]]
                info = {"labels": r["label_idx"], "split": split, "fold": c["fold"], "path": c["path"],
                        "valid_frames": r["valid"], "meta": c["meta"]}
                writer.write({"__key__": r["key"], "mel.npy": _npy_bytes(r["mel"]), "json": json.dumps(info).encode()})
                counts[-1] += 1
                if split in norm_splits:
                    stats += (r["sum"], r["sumsq"], r["count"])
            if writer is not None:
                writer.close()
                fh.close()
            if shards:
                splits_meta[split] = {"shards": shards, "counts": counts, "clips": sum(counts)}
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()

    summary = Summary(out=out, written={s: m["clips"] for s, m in splits_meta.items()}, failures=failures)
    if stats[2] > 0:
        mean = stats[0] / stats[2]
        std = float(np.sqrt(max(stats[1] / stats[2] - mean**2, 1e-12)))
    else:
        mean, std = 0.0, 1.0
    info = {
        "format": FORMAT_VERSION,
        "name": result.name,
        "classes": list(result.classes),
        "multilabel": bool(result.multilabel),
        "features": cfg.to_dict(),
        "norm": {"mean": float(mean), "std": std, "over": [s for s in norm_splits if s in splits_meta]},
        "splits": splits_meta,
        "failures": len(failures),
        "split_note": getattr(result, "split_note", ""),
        "source": source or {},
    }
    with open(tmp / "dataset.json", "w") as f:
        json.dump(info, f, indent=1)
    with open(tmp / "failures.jsonl", "w") as f:
        for r in failures:
            f.write(json.dumps(r) + "\n")
    # swap the new output in: remove the previous run's shards first (idempotent re-runs)
    for old in list(out.glob("*.tar")) + [out / "dataset.json", out / "failures.jsonl"]:
        if old.exists():
            old.unlink()
    for new in tmp.iterdir():
        os.replace(new, out / new.name)
    shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="output directory for shards, dataset.json, failures.jsonl")
    g.add_argument("--workers", type=int, default=None, help="feature processes (default: min(4, cores))")
    g.add_argument("--shard-size", type=int, default=256, help="clips per shard (make many more shards than GPUs x workers)")
    g.add_argument("--target-frames", type=int, default=1024, help="frames per clip (seed 001 §III-A: 1024)")
    g.add_argument("--num-mel-bins", type=int, default=128, help="mel bins (seed 001 §III-A: 128)")
    g.add_argument("--sample-rate", type=int, default=16000, help="resample to this rate (seed 001 §III-A: 16 kHz)")
    g.add_argument("--strict", action="store_true", help="exit non-zero when any clip failed")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    readers = all_readers()
    parser = argparse.ArgumentParser(prog="audiognn-prepare", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="reader", required=True, metavar="READER")
    for name, reader in readers.items():
        p = sub.add_parser(name, help=(reader.__doc__ or name).strip().split("\n")[0])
        reader.add_arguments(p)
        _add_common(p)
    args = parser.parse_args(argv)
    cfg = FeatureConfig(sample_rate=args.sample_rate, num_mel_bins=args.num_mel_bins, target_frames=args.target_frames)
    try:
        result = readers[args.reader].read(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = {"reader": args.reader, **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                          if k not in ("out", "quiet") and isinstance(v, (str, int, float, bool, list, Path, type(None)))}}
    summary = prepare(result, args.out, cfg, workers=args.workers, shard_size=args.shard_size,
                      progress=not args.quiet, source=source)
    print(summary)
    if summary.total == 0:
        print("error: no clip was written", file=sys.stderr)
        return 1
    if args.strict and summary.failures:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
