"""The log-mel shard format: ``dataset.json``, shard names, writing and reading samples.

A prepared set is a directory (or a URL prefix webdataset can open) holding ``dataset.json`` and one or
more uncompressed tar shards per split, named ``<split>-NNNNNN.tar`` (:func:`shard_name`). Every clip is
one sample of three tar members sharing its key (``[A-Za-z0-9_-]``, no dot: webdataset cuts a member
name at the first dot of its basename to find the key):

* ``<key>.mel.npy``: float16 log-mel ``[T, F]`` (``np.save`` bytes, C order);
* ``<key>.json``: ``{"labels": [class indices], "split", "fold", "path", "valid_frames", "meta"}``.

``dataset.json`` (:data:`FORMAT_VERSION` 1)::

    {"format": 1, "name": str, "classes": [str], "multilabel": bool,
     "features": {FeatureConfig fields},
     "norm": {"mean": float, "std": float, "over": [split],
              "splits": {split: {"clips": int, "frames": int, "count": int, "mean": float, "var": float}}},
     "splits": {split: {"shards": [file name], "counts": [clips per shard], "sha256": [hex digest per shard],
                        "clips": int}},
     "failures": int, "split_note": str, "source": {reader arguments}}

``norm``: log-mel statistics over the valid frames of the splits ``over`` and of each split on its own;
:func:`pooled_norm` pools any splits' exactly (a fold normalised by its training folds only).

:func:`load_dataset_info` reads and validates it (one-line errors naming the file and the key). Writers
use :func:`npy_bytes` and :class:`ShardWriter`; readers use :func:`iter_shard_samples` (built on the
one-read tar iterator :func:`iter_tar` and the header-free :func:`load_npy`), :func:`decode_sample` and
:func:`read_split_clips`; the training stream reads whole shards with :func:`read_shard`, which checks
the clip count and the sha256 that ``dataset.json`` records (sets written before checksums existed are read
unverified). Split and shard names must match :data:`SAFE_NAME` (no path separator, nothing a shell reads),
checked before any path or ``pipe:`` command is built.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shlex
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import webdataset as wds

from audiognn.data.tar import iter_tar

FORMAT_VERSION = 1
#: Keys every consumer of a full shard set needs (the stream, the DataModules).
REQUIRED_KEYS = ("classes", "multilabel", "splits", "features", "norm")
#: Split and shard names: a letter or digit, then letters, digits, ``_ . -`` (no ``/``, no shell syntax).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ShardError(RuntimeError):
    """A shard that cannot be read; the message names it."""


class DatasetInfoError(ValueError):
    """A ``dataset.json`` that lacks a key or holds a value of the wrong type; the message names both."""


# --- names and locations --------------------------------------------------------------------------------
def is_safe_name(name) -> bool:
    """True when ``name`` fully matches :data:`SAFE_NAME` (usable as a file name and in a shell command)."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``<split>-NNNNNN.tar``."""
    return f"{split}-{index:06d}.tar"


def is_url(root: str | Path) -> bool:
    """True for anything webdataset opens that is not a local path (``pipe:...``, ``http://``, ``s3://`` ...)."""
    root = str(root)
    return "://" in root or root.startswith("pipe:")


def join(root: str | Path, name: str) -> str:
    """``name`` inside ``root``, a local directory or a URL prefix."""
    root = str(root)
    if root.startswith("pipe:"):  # a shell command: the name is one quoted word
        return root.rstrip("/") + "/" + shlex.quote(name)
    if is_url(root):
        return root.rstrip("/") + "/" + name
    return str(Path(root) / name)


# --- dataset.json ----------------------------------------------------------------------------------------
def _check(ok: bool, path: str, key: str, expected: str, value) -> None:
    if not ok:
        raise DatasetInfoError(f"{path}: key '{key}' must be {expected}, got {value!r:.80}; re-run prepare")


def validate_dataset_info(info: dict, path: str, required: Iterable[str] = REQUIRED_KEYS) -> dict:
    """Check the schema of a parsed ``dataset.json`` (``path`` names it in errors); returns ``info``.

    Keys in ``required`` must be present; every present key of the schema must have its type. A split
    must list its ``shards``; its ``counts``, when present, give one clip count per shard.
    """
    _check(isinstance(info, dict), path, "<top level>", "an object", type(info).__name__)
    for key in required:
        _check(key in info, path, key, "present", None)
    if "classes" in info:
        cls = info["classes"]
        _check(isinstance(cls, list) and all(isinstance(c, str) for c in cls), path, "classes",
               "a list of class names", cls)
    if "multilabel" in info:
        _check(isinstance(info["multilabel"], bool), path, "multilabel", "true or false", info["multilabel"])
    for key in ("features", "norm"):
        if info.get(key) is not None:
            _check(isinstance(info[key], dict), path, key, "an object", info[key])
    if isinstance(info.get("norm"), dict):
        for stat in ("mean", "std"):
            _check(isinstance(info["norm"].get(stat), (int, float)), path, f"norm.{stat}", "a number",
                   info["norm"].get(stat))
    if "splits" in info:
        _check(isinstance(info["splits"], dict), path, "splits", "an object {split: {shards, counts}}",
               info["splits"])
        for split, meta in info["splits"].items():
            key = f"splits.{split}"
            _check(is_safe_name(split), path, key, f"a split name matching {SAFE_NAME.pattern}", split)
            _check(isinstance(meta, dict) and isinstance(meta.get("shards"), list), path, f"{key}.shards",
                   "a list of shard file names", meta)
            for name in meta["shards"]:
                _check(is_safe_name(name), path, f"{key}.shards", f"shard names matching {SAFE_NAME.pattern}", name)
            n = len(meta["shards"])
            for field, kind, what in (("counts", int, "clip counts"), ("sha256", str, "sha256 hex digests")):
                if meta.get(field) is not None:
                    _check(isinstance(meta[field], list) and len(meta[field]) == n
                           and all(isinstance(v, kind) and not isinstance(v, bool) for v in meta[field]),
                           path, f"{key}.{field}", f"{n} {what} (one per shard)", meta[field])
    return info


def load_dataset_info(root: str | Path, required: Iterable[str] = REQUIRED_KEYS) -> dict:
    """Read and validate ``dataset.json`` from a local directory or a URL prefix webdataset can open.

    Raises ``FileNotFoundError`` when it is missing and :class:`DatasetInfoError` (a ``ValueError``) when
    it is not JSON or breaks the schema (:func:`validate_dataset_info`); each message is one line naming
    the file.
    """
    path = join(root, "dataset.json")
    try:
        if is_url(root):
            with wds.gopen(path) as f:
                info = json.loads(f.read())
        else:
            with open(path) as f:
                info = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: '{root}' is not a prepared shard directory; "
            "run `python -m datamodules.prepare READER ... --out DIR` first"
        ) from None
    except json.JSONDecodeError as exc:
        raise DatasetInfoError(f"{path} is not valid JSON ({exc}); re-run prepare") from None
    return validate_dataset_info(info, path, required)


def split_shards(info: dict, root: str | Path, names: Iterable[str]) -> tuple[list[str], list[int]]:
    """(shard URLs, clips per shard) of the splits ``names``, in order; a one-line error for a missing split."""
    urls, counts, _ = split_shard_meta(info, root, names)
    return urls, counts


def split_shard_meta(info: dict, root: str | Path,
                     names: Iterable[str]) -> tuple[list[str], list[int], list[str | None]]:
    """(shard URLs, clips per shard, sha256 per shard or None where ``dataset.json`` has none) of ``names``."""
    urls, counts, digests = [], [], []
    for name in names:
        if name not in info["splits"]:
            raise KeyError(f"split '{name}' is not in {join(root, 'dataset.json')}: it has {sorted(info['splits'])}")
        meta = info["splits"][name]
        if "counts" not in meta:
            raise DatasetInfoError(f"{join(root, 'dataset.json')}: key 'splits.{name}.counts' must be present")
        urls += [join(root, s) for s in meta["shards"]]
        counts += list(meta["counts"])
        digests += list(meta.get("sha256") or [None] * len(meta["shards"]))
    return urls, counts, digests


def pooled_norm(info: dict, splits: Iterable[str]) -> tuple[float, float, list[str]]:
    r"""(mean, std, splits used) of the log-mel pooled over ``splits`` from ``norm.splits`` of ``dataset.json``.

    Exact for a union of splits: with :math:`n_s` values of mean :math:`\mu_s` and variance :math:`\sigma_s^2`
    per split, :math:`\mu = \sum_s n_s \mu_s / N` and
    :math:`\sigma^2 = \sum_s n_s (\sigma_s^2 + \mu_s^2) / N - \mu^2`, :math:`N = \sum_s n_s`. When a split
    has no entry (a set written before per-split statistics, or no ``splits`` given), the set's single
    ``norm.mean`` / ``norm.std`` and its ``norm.over`` are returned.
    """
    norm, splits = info["norm"], list(splits)
    per = norm.get("splits") or {}
    if not splits or any(s not in per for s in splits):
        return float(norm["mean"]), float(norm["std"]), list(norm.get("over") or [])
    n = sum(per[s]["count"] for s in splits)
    if n <= 0:
        return 0.0, 1.0, splits
    mean = sum(per[s]["count"] * per[s]["mean"] for s in splits) / n
    second = sum(per[s]["count"] * (per[s]["var"] + per[s]["mean"] ** 2) for s in splits) / n
    return float(mean), float(np.sqrt(max(second - mean**2, 1e-12))), splits


# --- writing ---------------------------------------------------------------------------------------------
def npy_bytes(a: np.ndarray) -> bytes:
    """``np.save`` of ``a`` as bytes (the ``mel.npy`` member)."""
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def encode_sample(key: str, mel: np.ndarray, meta: dict) -> dict:
    """The tar members of one clip, for ``webdataset.TarWriter(encoder=False)``."""
    return {"__key__": key, "mel.npy": npy_bytes(mel), "json": json.dumps(meta).encode()}


class ShardWriter:
    """Writes one split's samples into shards of at most ``shard_size`` clips under ``out``.

    Members get a fixed mtime (byte-identical output for the same input). USTAR headers are used when every
    key fits (readers then parse no pax records), else PAX.

    Args:
        out: directory to write into.
        split: split name (shards are ``<split>-NNNNNN.tar``).
        shard_size: clips per shard (default 256).
        max_key_len: length of the longest key, to choose the tar header format (default 0).
    """

    def __init__(self, out: str | Path, split: str, shard_size: int = 256, max_key_len: int = 0):
        self.out, self.split, self.shard_size = Path(out), split, shard_size
        self.format = tarfile.USTAR_FORMAT if max_key_len <= 80 else tarfile.PAX_FORMAT
        self.shards: list[str] = []
        self.counts: list[int] = []
        self.sha256: list[str] = []
        self._fh = self._writer = None

    def write(self, key: str, mel: np.ndarray, meta: dict) -> None:
        """Append one clip, starting a new shard when the current one is full."""
        if self._writer is None or self.counts[-1] >= self.shard_size:
            self._close_shard()
            name = shard_name(self.split, len(self.shards))
            self._fh = open(self.out / name, "wb")
            self._writer = wds.TarWriter(self._fh, encoder=False, mtime=0.0, format=self.format)
            self.shards.append(name)
            self.counts.append(0)
        self._writer.write(encode_sample(key, mel, meta))
        self.counts[-1] += 1

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._fh.close()
            self._fh = self._writer = None
            self.sha256.append(hashlib.sha256((self.out / self.shards[-1]).read_bytes()).hexdigest())

    def close(self) -> dict | None:
        """Finish the last shard; the split's ``dataset.json`` entry, or None when nothing was written."""
        self._close_shard()
        if not self.shards:
            return None
        return {"shards": list(self.shards), "counts": list(self.counts), "sha256": list(self.sha256),
                "clips": sum(self.counts)}


# --- reading ---------------------------------------------------------------------------------------------
_NPY_HEADER = re.compile(rb"'descr':\s*'([<>|]?\w+)'.*'fortran_order':\s*False.*'shape':\s*\((\d+),\s*(\d+)\)")


def load_npy(buf: bytes) -> np.ndarray:
    """``np.load`` of a 2-D C-order .npy without ``ast.literal_eval`` of its header (a hot path)."""
    if buf[:8] == b"\x93NUMPY\x01\x00":
        hlen = int.from_bytes(buf[8:10], "little")
        m = _NPY_HEADER.search(buf[10 : 10 + hlen])
        if m:
            return np.frombuffer(buf, dtype=np.dtype(m.group(1).decode()), offset=10 + hlen).reshape(
                int(m.group(2)), int(m.group(3)))
    return np.load(io.BytesIO(buf), allow_pickle=False)


def _open(url: str):
    """A binary stream of one shard, local or any URL webdataset opens."""
    return wds.gopen(url, bufsize=1 << 20) if is_url(url) else open(url, "rb", buffering=1 << 20)


def _open_members(url: str):
    """(stream, iterator of (member name, bytes)) of one shard, local or any URL webdataset opens."""
    if url.endswith((".gz", ".tgz")):  # compressed shards: webdataset's (tarfile-based) reader
        stream = wds.gopen(url)
        return stream, ((f["fname"], f["data"]) for f in wds.tariterators.tar_file_iterator(stream))
    stream = _open(url)
    return stream, iter_tar(stream)


def _checked(sample: dict) -> dict:
    if "mel.npy" not in sample or "json" not in sample:
        raise ShardError(f"sample '{sample.get('__key__')}' lacks mel.npy or json")
    return sample


def iter_shard_samples(url: str) -> Iterator[dict]:
    """Raw samples ``{"__key__", "mel.npy": bytes, "json": bytes}`` of one shard, in tar order.

    Members are grouped by webdataset's rule (the key ends at the first dot of the basename). Raises
    ``ValueError`` / ``OSError`` on a damaged shard and :class:`ShardError` on a sample lacking a member.
    """
    stream, files = _open_members(url)
    try:
        yield from _group(files)
    finally:
        stream.close()


def _group(files: Iterable[tuple[str, bytes]]) -> Iterator[dict]:
    """Raw samples from (member name, bytes) in tar order (the key ends at the first dot of the basename)."""
    current: dict | None = None
    for name, data in files:
        key, _, ext = name.rsplit("/", 1)[-1].partition(".")
        if current is not None and key != current["__key__"]:
            yield _checked(current)
            current = None
        if current is None:
            current = {"__key__": key}
        current[ext] = data
    if current is not None:
        yield _checked(current)


#: Local shards whose sha256 this process has checked: path -> (sha256, size, mtime_ns) at that time.
_VERIFIED: dict[str, tuple[str, int, int]] = {}


def read_shard(url: str, count: int | None = None, sha256: str | None = None) -> list[dict]:
    """Every raw sample of one shard, verified before any is returned.

    The shard is read whole (one ``read``); when given, its sha256 must equal ``sha256`` and it must hold
    ``count`` samples (both as ``dataset.json`` records them). Raises :class:`ShardError` naming the shard
    and what differs (a damaged tar raises it too). A local shard is hashed once per process while its size
    and mtime stay the same (hashing costs about as much as decoding); URLs are hashed on every read.
    """
    with _open(url) as stream:
        st = None if is_url(url) else os.fstat(stream.fileno())
        data = stream.read()
    stamp = (sha256, st.st_size, st.st_mtime_ns) if st is not None else None
    if sha256 is not None and (stamp is None or _VERIFIED.get(url) != stamp):
        if (got := hashlib.sha256(data).hexdigest()) != sha256:
            raise ShardError(f"shard {url}: sha256 {got[:16]}... of its {len(data)} bytes differs from "
                             f"dataset.json's {sha256[:16]}... (corrupt or replaced)")
        if stamp is not None:
            _VERIFIED[url] = stamp
    try:
        raw = gzip.decompress(data) if url.endswith((".gz", ".tgz")) else data
        samples = list(_group(iter_tar(io.BytesIO(raw))))
    except (ValueError, OSError, EOFError) as exc:
        raise ShardError(f"shard {url} is damaged: {exc}") from None
    if count is not None and len(samples) != count:
        raise ShardError(f"shard {url} holds {len(samples)} clips but dataset.json lists {count}")
    return samples


def decode_sample(sample: dict) -> tuple[str, np.ndarray, dict]:
    """(key, log-mel ``[T, F]`` as stored (float16, read-only view), metadata dict) of a raw sample."""
    return sample["__key__"], load_npy(sample["mel.npy"]), json.loads(sample["json"])


def read_split_clips(root: str | Path, split: str) -> list[dict]:
    """Every clip of ``split`` in the shard set at ``root`` (a directory or URL prefix), in shard order.

    Each clip is a dict: ``key``, ``mel`` (float32 ``[T, F]``), ``labels`` (class indices), ``valid``
    (valid frames), ``artist`` (``json["artist"]`` or ``json["meta"]["artist"]``, else None) and ``meta``
    (the sample's whole JSON). A split absent from ``dataset.json`` gives ``[]``; a listed shard that does
    not exist raises ``FileNotFoundError`` naming it; one whose clip count or sha256 differs from
    ``dataset.json`` :class:`ShardError` (:func:`read_shard`).
    """
    info = load_dataset_info(root, required=("classes", "splits"))
    if split not in info["splits"]:
        return []
    out, meta = [], info["splits"][split]
    n = len(meta["shards"])
    for name, count, digest in zip(meta["shards"], meta.get("counts") or [None] * n, meta.get("sha256") or [None] * n):
        url = join(root, name)
        if not is_url(url) and not Path(url).exists():
            raise FileNotFoundError(f"{join(root, 'dataset.json')} lists shard {url} of split '{split}', "
                                    "which does not exist")
        for sample in read_shard(url, count, digest):
            key, mel, meta = decode_sample(sample)
            if "labels" not in meta:
                raise ValueError(f"sample '{key}' in {url} lacks the json key 'labels'")
            artist = meta.get("artist") or (meta.get("meta") or {}).get("artist")
            out.append({"key": key, "mel": mel.astype(np.float32), "labels": list(meta["labels"]),
                        "valid": int(meta.get("valid_frames") or mel.shape[0]), "artist": artist, "meta": meta})
    return out
