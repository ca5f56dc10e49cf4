"""Average saved checkpoints offline: `python -m audiognn.cli.average_checkpoints a.ckpt b.ckpt ... -o avg.ckpt`.

Also installed as `audiognn-average-checkpoints`. This is how AST/PSLA (and the official LHGNN code;
Singh et al., *LHGNN*, §III-A: "weighted average of different model checkpoints") average: the equal mean of the weights of N saved checkpoints, BatchNorm statistics
included; integer buffers (BatchNorm `num_batches_tracked`) are counters and are taken from the last file.

Which weights are averaged: a checkpoint written with `WindowWeightAveraging`/`EMAWeightAveraging` holds the
running average in `state_dict` and that epoch's own weights in `current_model_state`; the per-epoch
weights (`current_model_state`) are used when present (`--key state_dict` forces the stored average).

The output is a Lightning checkpoint accepted by `python train.py test --ckpt_path avg.ckpt` (and
`validate`/`predict`): the last input's metadata (hyper-parameters, datamodule hyper-parameters, anything
the LightningModule saved) with the averaged `state_dict`; optimizer, loop and callback state are dropped
(so it is not a checkpoint to resume training from). `averaged_from` lists the inputs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from audiognn.checkpoint import CheckpointError, load_checkpoint

# Training state that does not describe the averaged model; everything else of the last input is kept.
_TRAINING_KEYS = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "current_model_state",
                  "averaging_state", "MixedPrecision", "HalfPrecision", "DoublePrecision", "FSDPPrecision")


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]],
                        names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Equal mean of state dicts with identical keys and shapes (float64 accumulation, original dtypes)."""
    names = list(names) if names is not None else [f"#{i}" for i in range(len(state_dicts))]
    if not state_dicts:
        raise ValueError("average_state_dicts: no state dicts given")
    ref, ref_name = state_dicts[0], names[0]
    for sd, name in zip(state_dicts[1:], names[1:]):
        if sd.keys() != ref.keys():
            missing, extra = sorted(ref.keys() - sd.keys())[:5], sorted(sd.keys() - ref.keys())[:5]
            raise CheckpointError(f"{name!r} does not match {ref_name!r}: missing keys {missing}, "
                                  f"unexpected keys {extra} (checkpoints of different models?)")
        for k, v in sd.items():
            if v.shape != ref[k].shape or v.dtype != ref[k].dtype:
                raise CheckpointError(f"{name!r} does not match {ref_name!r} at {k!r}: {tuple(v.shape)} "
                                      f"{v.dtype} vs {tuple(ref[k].shape)} {ref[k].dtype}")
    out = {}
    for k, v in ref.items():
        if v.is_floating_point() or v.is_complex():
            acc = torch.stack([sd[k].to(torch.complex128 if v.is_complex() else torch.float64)
                               for sd in state_dicts])
            out[k] = acc.mean(0).to(v.dtype)
        else:
            out[k] = state_dicts[-1][k].clone()
    return out


def weights_of(ckpt: dict[str, Any], key: str | None = None) -> dict[str, torch.Tensor]:
    """The weights to average: `key` if given, else `current_model_state` when present, else `state_dict`."""
    key = key or ("current_model_state" if "current_model_state" in ckpt else "state_dict")
    if key not in ckpt:
        raise KeyError(key)
    return ckpt[key]


def average_checkpoints(paths: Sequence[str | Path], output: str | Path, key: str | None = None) -> dict[str, Any]:
    """Average the checkpoints at `paths` into a Lightning checkpoint at `output`; return it."""
    if len(paths) < 1:
        raise ValueError("average_checkpoints: give at least one checkpoint")
    ckpts, weights = [], []
    for p in paths:
        ckpt = load_checkpoint(p)
        try:
            weights.append(weights_of(ckpt, key))
        except KeyError as e:
            raise CheckpointError(f"checkpoint {str(p)!r} has no {e.args[0]!r} "
                                  f"(keys: {sorted(map(str, ckpt))})") from e
        ckpts.append(ckpt)
    out = {k: v for k, v in ckpts[-1].items() if k not in _TRAINING_KEYS}
    out["state_dict"] = average_state_dicts(weights, [str(p) for p in paths])
    out["averaged_from"] = [str(p) for p in paths]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, output)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="audiognn-average-checkpoints",
        description="Equal mean of the weights of N Lightning checkpoints (AST/PSLA checkpoint averaging).")
    parser.add_argument("checkpoints", nargs="+", help="input .ckpt files (e.g. the epochs wa_start..wa_end)")
    parser.add_argument("-o", "--output", required=True, help="output .ckpt (for train.py test --ckpt_path)")
    parser.add_argument("--key", choices=["state_dict", "current_model_state"], default=None,
                        help="which weights to average (default: current_model_state when present)")
    args = parser.parse_args(argv)
    try:
        out = average_checkpoints(args.checkpoints, args.output, args.key)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"averaged {len(args.checkpoints)} checkpoints ({len(out['state_dict'])} tensors) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
