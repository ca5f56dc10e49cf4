"""Featurise a reader's clips and write them as a shard set (:mod:`audiognn.data.shards` format).

:func:`prepare` is the engine behind ``python -m datamodules.prepare``: it decodes every clip (or renders
a synthetic one), computes its log-mel, writes the shards of each split in key order, and writes
``dataset.json`` (with the normalisation statistics: mean/std of the log-mel over the valid frames of the
training split -- when there is no split named ``train``, ESC-50's or UrbanSound8K's folds, over every clip --
and the same statistics of every split on its own, ``norm.splits``, from which a DataModule pools those of
its training splits: :func:`audiognn.data.shards.pooled_norm`) and ``failures.jsonl``. Output is idempotent: everything is assembled in a temporary directory and swapped in
at the end, with a fixed tar mtime, so the same input gives byte-identical shards.

Faults: the swap replaces only the previous set's own files (the shards its ``dataset.json`` lists or named
after its splits, ``dataset.json``, ``failures.jsonl``) — other ``.tar`` files in the directory are left
alone. An interrupted or failed run (Ctrl-C, a full disk) terminates the feature processes (they ignore
SIGINT, so the parent stops them instead of waiting for their lost tasks), removes its temporary directory
and leaves the previous set untouched. Clips whose split is not a safe name (:data:`SAFE_NAME`) are failures,
found before anything is featurised.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from audiognn.data.shards import FORMAT_VERSION, SAFE_NAME, ShardWriter, is_safe_name
from audiognn.features import AudioError, FeatureConfig, extract
from datamodules.synthetic import SR, synth_clip


@dataclass
class Summary:
    """What :func:`prepare` wrote: clips per split and the failure records (printed as one line)."""

    out: Path
    written: dict[str, int] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    #: valid (unpadded) frames of every written clip, and the frames each was padded or cropped to
    valid_frames: list[int] = field(default_factory=list)
    target_frames: int = 0

    def padding_warning(self, ratio: float = 3.0, share: float = 0.5) -> str | None:
        """A warning when more than ``share`` of the clips are padded to ``ratio`` times their length or more
        (``--target-frames`` far longer than the clips: mostly padding, e.g. 1024 frames for 0.4 s words)."""
        v = np.asarray(self.valid_frames)
        if not v.size or not self.target_frames:
            return None
        padded = int((v * ratio <= self.target_frames).sum())
        if padded <= share * v.size:
            return None
        return (f"warning: {padded} of {v.size} clips ({100 * padded / v.size:.0f} %) are padded to {ratio:g}x "
                f"their length or more (--target-frames {self.target_frames}, median clip {int(np.median(v))} "
                f"frames): consider --target-frames {int(np.percentile(v, 95))} (95th percentile of the clips)")

    @property
    def total(self) -> int:
        """Clips written over all splits."""
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


# --- feature worker ---------------------------------------------------------------------------------------
def _init_worker() -> None:
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops the pool


def _failed(clip: dict, reason: str, detail: str) -> dict:
    return {"key": clip["key"], "path": clip.get("path"), "split": clip["split"], "reason": reason, "detail": detail}


def _featurize(job: tuple[dict, dict]) -> dict:
    """One clip -> {"key", "mel" (float16 [T, F]), "valid", "label_idx", "sum", "sumsq", "count"} or a failure."""
    clip, cfgd = job
    cfg = FeatureConfig.from_dict(cfgd)
    try:
        syn = clip["meta"].get("synthetic")
        if syn is not None:
            wave, labels = synth_clip(syn["variant"], syn["index"], cfg.clip_seconds, syn["seed"],
                                      syn.get("difficulty", 0.0))
            mel, valid = extract((wave, SR), cfg)
            clip = {**clip, "label_idx": labels}
        else:
            mel, valid = extract(clip["path"], cfg)
    except AudioError as exc:
        return _failed(clip, exc.reason, exc.detail)
    except Exception as exc:  # a reader bug or an exotic decoder failure must not lose the other clips
        return _failed(clip, "error", repr(exc))
    m = mel.numpy()
    v = m[:valid].astype(np.float64)
    return {"key": clip["key"], "mel": m.astype(np.float16), "valid": valid, "label_idx": clip["label_idx"],
            "sum": float(v.sum()), "sumsq": float((v**2).sum()), "count": valid * m.shape[1]}


# --- steps ------------------------------------------------------------------------------------------------
def _group_clips(result) -> tuple[dict[str, list[dict]], list[dict]]:
    """Jobs per split (labels as class indices) and the failures of the reader plus unknown / no labels."""
    cls_index = {c: i for i, c in enumerate(result.classes)}
    failures = list(result.failures)
    by_split: dict[str, list[dict]] = defaultdict(list)
    for c in result.clips:
        if not is_safe_name(c.split):
            failures.append({"key": c.key, "path": c.path, "split": None, "reason": "bad_split",
                             "detail": f"split name {c.split!r} does not match {SAFE_NAME.pattern} "
                                       "(shards are named after their split inside --out)"})
            continue
        unknown = [lab for lab in c.labels if lab not in cls_index]
        if unknown:
            failures.append({"key": c.key, "path": c.path, "split": c.split, "reason": "unknown_label",
                             "detail": f"labels {unknown} are not in the {len(cls_index)} classes"})
            continue
        if not c.labels and "synthetic" not in c.meta:
            failures.append({"key": c.key, "path": c.path, "split": c.split, "reason": "no_label", "detail": ""})
            continue
        # webdataset splits member names at the first dot (key.mel.npy): keys must not contain dots
        by_split[c.split].append({"key": c.key.replace(".", "_"), "path": c.path, "split": c.split, "fold": c.fold,
                                  "meta": c.meta, "label_idx": sorted(cls_index[lab] for lab in c.labels)})
    keys = [c["key"] for cs in by_split.values() for c in cs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError(f"reader '{result.name}' produced duplicate clip keys, e.g. {dup}: keys must be unique")
    return by_split, failures


def _write_split(split: str, clips: list[dict], featurized, out: Path, shard_size: int, failures: list[dict],
                 stats: np.ndarray, valid: list[int]) -> dict | None:
    """Write one split's featurised clips (in key order) into shards; add their (sum, sum of squares, count of
    values, valid frames) to ``stats`` and their valid frames to ``valid``."""
    meta_of = {c["key"]: c for c in clips}
    writer = ShardWriter(out, split, shard_size, max_key_len=max(len(k) for k in meta_of))
    for r in featurized:
        if "reason" in r:
            failures.append(r)
            continue
        c = meta_of[r["key"]]
        writer.write(r["key"], r["mel"], {"labels": r["label_idx"], "split": split, "fold": c["fold"],
                                          "path": c["path"], "valid_frames": r["valid"], "meta": c["meta"]})
        stats += (r["sum"], r["sumsq"], r["count"], r["valid"])
        valid.append(r["valid"])
    return writer.close()


def _norm(stats: np.ndarray) -> tuple[float, float]:
    """(mean, std) from (sum, sum of squares, count)."""
    if stats[2] <= 0:
        return 0.0, 1.0
    mean = stats[0] / stats[2]
    return float(mean), float(np.sqrt(max(stats[1] / stats[2] - mean**2, 1e-12)))


def split_norm(stats: np.ndarray, clips: int) -> dict:
    """One split's entry of ``norm.splits``: clips, valid frames, values (``count``), mean and variance."""
    mean, std = _norm(stats)
    return {"clips": clips, "frames": int(stats[3]), "count": int(stats[2]), "mean": mean, "var": std**2}


def _previous_shards(out: Path) -> set[str]:
    """Shards of the set already in ``out``: those its ``dataset.json`` lists, and ``<split>-NNNNNN.tar`` of
    its splits (left by an earlier run); nothing else in the directory is ours to remove."""
    try:
        splits = json.loads((out / "dataset.json").read_text()).get("splits")
    except (OSError, ValueError, AttributeError):
        return set()
    names: set[str] = set()
    for split, meta in splits.items() if isinstance(splits, dict) else ():
        if is_safe_name(split):
            pattern = re.compile(re.escape(split) + r"-\d{6}\.tar")
            names |= {p.name for p in out.glob("*.tar") if pattern.fullmatch(p.name)}
            names |= {n for n in (meta.get("shards") or []) if is_safe_name(n)} if isinstance(meta, dict) else set()
    return names


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace the previous set in ``out`` by the files of ``tmp`` (idempotent re-runs); ``dataset.json`` last."""
    stale = _previous_shards(out)
    for new in sorted(tmp.iterdir(), key=lambda p: p.name == "dataset.json"):
        os.replace(new, out / new.name)
        stale.discard(new.name)
    for name in stale:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(out: str | Path) -> Path:
    """``out`` created if needed; ``OSError`` with a one-line message when it cannot hold the output."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out} is not writable")
    return out


def prepare(result, out: str | Path, cfg: FeatureConfig = FeatureConfig(), workers: int | None = None,
            shard_size: int = 256, progress: bool = True, source: dict | None = None) -> Summary:
    """Featurise every clip of a reader's ``result`` and write shards + dataset.json + failures.jsonl to ``out``.

    Args:
        result: a ``datamodules.readers.ReadResult``.
        out: output directory (created; the previous set there is replaced, other files are kept).
        cfg: feature parameters (default ``FeatureConfig()``).
        workers: feature processes (default ``min(4, cores)``; 1 works in-process).
        shard_size: clips per shard (default 256).
        progress: show a progress bar (default True).
        source: reader arguments recorded in ``dataset.json`` (default ``{}``).
    """
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out = check_output_dir(out)
    by_split, failures = _group_clips(result)
    stats = {s: np.zeros(4) for s in by_split}  # per split: sum, sum of squares, count of values, frames
    valid: list[int] = []
    _remove_stale_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{os.getpid()}-", dir=out))
    try:
        splits_meta = _featurize_all(result.name, by_split, stats, valid, failures, tmp, cfg, workers,
                                     shard_size, progress)
        norm_splits = [s for s in (["train"] if "train" in by_split else sorted(by_split)) if s in splits_meta]
        mean, std = _norm(sum((stats[s] for s in norm_splits), np.zeros(4)))
        info = {
            "format": FORMAT_VERSION,
            "name": result.name,
            "classes": list(result.classes),
            "multilabel": bool(result.multilabel),
            "features": cfg.to_dict(),
            "norm": {"mean": mean, "std": std, "over": norm_splits,
                     "splits": {s: split_norm(stats[s], m["clips"]) for s, m in splits_meta.items()}},
            "splits": splits_meta,
            "failures": len(failures),
            "split_note": getattr(result, "split_note", ""),
            "source": source or {},
        }
        (tmp / "dataset.json").write_text(json.dumps(info, indent=1))
        (tmp / "failures.jsonl").write_text("".join(json.dumps(r) + "\n" for r in failures))
        _swap_in(tmp, out)
    finally:  # Ctrl-C, a full disk: nothing partial is left, the previous set stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
    return Summary(out=out, written={s: m["clips"] for s, m in splits_meta.items()}, failures=failures,
                   valid_frames=valid, target_frames=cfg.target_frames)


def _remove_stale_partials(out: Path) -> None:
    """Remove ``.partial-<pid>-*`` directories left by a prepare that was killed outright (``kill -9``, a
    lost node: its ``finally`` never ran) — those whose process no longer runs. A live prepare's is kept."""
    for d in out.glob(".partial-*"):
        m = re.fullmatch(r"\.partial-(\d+)-.*", d.name)
        if m and _alive(int(m.group(1))):
            continue
        shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def _featurize_all(name: str, by_split: dict[str, list[dict]], stats: dict[str, np.ndarray], valid: list[int],
                   failures: list[dict], tmp: Path, cfg: FeatureConfig, workers: int | None, shard_size: int,
                   progress: bool) -> dict[str, dict]:
    """Featurise and write every split into ``tmp``; the splits' ``dataset.json`` entries. On any exception
    (``KeyboardInterrupt`` included) the feature processes are terminated, not waited for."""
    splits_meta: dict[str, dict] = {}
    workers = workers or min(4, os.cpu_count() or 1)
    bar = tqdm(total=sum(len(v) for v in by_split.values()), desc=f"prepare {name}", unit="clip",
               disable=not progress)
    pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker) if workers > 1 else None
    done = False
    try:
        for split in sorted(by_split):
            clips = sorted(by_split[split], key=lambda c: c["key"])
            jobs = [(c, cfg.to_dict()) for c in clips]
            it = pool.imap(_featurize, jobs, chunksize=4) if pool else map(_featurize, jobs)
            featurized = ((bar.update(1), r)[1] for r in it)  # tqdm.update may return True
            meta = _write_split(split, clips, featurized, tmp, shard_size, failures, stats[split], valid)
            if meta is not None:
                splits_meta[split] = meta
        done = True
    finally:
        bar.close()
        if pool is not None:
            pool.close() if done else pool.terminate()
            pool.join()
    return splits_meta
