"""Shard loader throughput against decoding each WAV and computing its fbank on the fly (AST's way).

    python bench/loader.py [--clips 256] [--seconds 10.24] [--workers 2] [--batch-size 32] [--passes 2]

Both sides deliver the same clips as batches of ``[B, 1024, 128]`` log-mel (the input of *LHGNN: Local-Higher
Order Graph Neural Networks for Audio Classification and Tagging*, Singh et al., §III-A) through a PyTorch
DataLoader with the same number of workers:

* reference: a map-style Dataset that, per clip, decodes the WAV with soundfile, removes the mean and runs
  ``torchaudio.compliance.kaldi.fbank`` (AST / official LHGNN parameters), then pads to 1024 frames —
  what AST's and the official LHGNN's data loaders do every epoch (their mixup decodes a second file for
  half the clips; that extra cost is left out here, in the reference's favour);
* audiognn: ``AudioShardDataModule``'s training stream over shards written once by ``prepare``.

It prints clips/s for both and the ratio (goal: >= 20x), and the single-process ceiling of the shard format
itself (:mod:`audiognn.data.shards`: tar members read and log-mels decoded, no batching). Timings are
wall-clock over ``--passes`` full passes after one warm-up pass each.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiognn.data.shards import decode_sample, iter_shard_samples, load_dataset_info, split_shards  # noqa: E402
from audiognn.features import FeatureConfig, extract  # noqa: E402
from datamodules.audio_shards import AudioShardDataModule  # noqa: E402
from datamodules.prepare import main as prepare_main  # noqa: E402
from datamodules.synthetic import SR, events_clip  # noqa: E402


class OnTheFlyFbank(Dataset):
    """AST-style: decode + fbank + pad for every clip, every epoch."""

    def __init__(self, paths, cfg):
        self.paths, self.cfg = paths, cfg

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        mel, _ = extract(self.paths[i], self.cfg)
        return mel


def _time(loader, passes: int) -> tuple[float, int]:
    n = sum(b.shape[0] if torch.is_tensor(b) else b["x"].shape[0] for b in loader)  # warm-up pass
    t = time.perf_counter()
    for _ in range(passes):
        for _b in loader:
            pass
    return time.perf_counter() - t, n * passes


def _time_raw(root: Path, passes: int) -> tuple[float, int]:
    """Read and decode every training clip straight from the shards, in this process."""
    urls, _ = split_shards(load_dataset_info(root), root, ["train"])

    def one_pass() -> int:
        return sum(decode_sample(s)[1].shape[0] > 0 for u in urls for s in iter_shard_samples(u))

    n = one_pass()  # warm-up
    t = time.perf_counter()
    for _ in range(passes):
        one_pass()
    return time.perf_counter() - t, n * passes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10.24)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                    help="DataLoader worker counts to measure (each for both loaders)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = FeatureConfig()  # 1024 x 128
    tmp = Path(tempfile.mkdtemp(prefix="audiognn-bench-loader-"))
    try:
        audio = tmp / "audio"
        audio.mkdir()
        rows = ["path,labels,split"]
        for i in range(args.clips):
            wave, labels = events_clip(i, args.seconds)
            sf.write(audio / f"c{i:05d}.wav", wave, SR, subtype="PCM_16")
            rows.append(f"audio/c{i:05d}.wav,{';'.join(f'e{k}' for k in labels)},train")
        (tmp / "m.csv").write_text("\n".join(rows) + "\n")
        t0 = time.perf_counter()
        prepare_main(["csv", str(tmp / "m.csv"), "--out", str(tmp / "shards"), "--workers", "2",
                      "--shard-size", "32", "--quiet"])
        prep = time.perf_counter() - t0

        paths = sorted(str(p) for p in audio.glob("*.wav"))
        print(f"clips: {args.clips} x {args.seconds:.2f} s, [1024, 128] log-mel, batch {args.batch_size}, "
              f"{args.passes} passes after a warm-up pass; prepare (one-off, 2 processes): {prep:.1f} s")
        ratios = []
        for workers in args.workers:
            ref = DataLoader(OnTheFlyFbank(paths, cfg), batch_size=args.batch_size, shuffle=True,
                             num_workers=workers, persistent_workers=workers > 0)
            dm = AudioShardDataModule(root=str(tmp / "shards"), batch_size=args.batch_size, num_workers=workers,
                                      val_splits=["train"], test_splits=["train"])
            dm.setup("fit")
            t_ref, n_ref = _time(ref, args.passes)
            t_ours, n_ours = _time(dm.train_dataloader(), args.passes)
            r_ref, r_ours = n_ref / t_ref, n_ours / t_ours
            ratios.append(r_ours / r_ref)
            print(f"[{workers} workers] on-the-fly WAV decode + kaldi fbank (AST): {r_ref:8.1f} clips/s | "
                  f"audiognn shards: {r_ours:8.1f} clips/s | {r_ours / r_ref:5.1f}x")
        t_raw, n_raw = _time_raw(tmp / "shards", args.passes)
        print(f"shard format alone (read + decode, 1 process): {n_raw / t_raw:8.1f} clips/s")
        print("speed-up: " + ", ".join(f"{r:.1f}x ({w} workers)" for r, w in zip(ratios, args.workers))
              + " (goal >= 20x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
