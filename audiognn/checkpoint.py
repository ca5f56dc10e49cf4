"""Safe checkpoint loading: weights-only unpickling and clear errors that name the file.

`torch.load` on a damaged file says "PytorchStreamReader failed reading zip archive" or raises a bare
`EOFError` / `KeyError`, without the path; a Lightning `Trainer` passes these through. This module wraps
loading so that every failure says which file, what was wrong and what to do:

- `load_checkpoint(path)` -> dict: `torch.load(..., weights_only=True)` (tensors, containers and primitives
  only: loading a checkpoint never runs code from it), then checks that it is a Lightning checkpoint
  (a dict with a `state_dict` of tensors).
- `SafeCheckpointIO`: the same as a Lightning `CheckpointIO` plugin, so `fit`/`test --ckpt_path`, `last`
  and SLURM `hpc` checkpoints all load through it (`trainer.plugins` in conf/trainer/*.yaml).
- `find_resume_checkpoint(*dirs)` / `python -m audiognn.checkpoint resume-path RUN_DIR CKPT_DIR`: the
  newest loadable checkpoint of a run (SLURM `hpc_ckpt_*.ckpt` or ModelCheckpoint's `last*.ckpt`),
  skipping damaged ones; the sbatch scripts use it to resume after a requeue.
- `callable_spec(fn)` / `build_from_spec(spec, *args)`: a module's class and init arguments as plain data
  (`{"class_path", "init_args"}`, what a task stores in its hyper-parameters so that `load_from_checkpoint`
  rebuilds its network without a config) and back.
- `load_backbone(checkpoint, backbone=None)`: the trained backbone of an audio classifier checkpoint as a plain
  `nn.Module` (its class named by the checkpoint's hyper-parameters or the run's `config.yaml`), e.g. to
  describe tracks by its embeddings.
- `check_checkpoint_class(ckpt, path, class_path)` / `check_checkpoint_fits(ckpt, path, model)`: one-line
  errors, before any work, when a checkpoint belongs to another model class or its sizes (e.g. its class
  count) differ from what the data gives (`train.py` runs both for `--ckpt_path`).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import pickle
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from audiognn.models.base import AudioBackbone


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged, unsafe to unpickle or not a Lightning checkpoint."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu", weights_only: bool = True) -> dict[str, Any]:
    """Load a Lightning checkpoint with `torch.load(weights_only=True)` and check its form.

    Raises `CheckpointError` naming `path` when the file is missing, truncated or corrupt, holds pickled
    objects other than tensors/containers/primitives, or is not a dict with a `state_dict` of tensors
    (e.g. a bare `model.state_dict()` or another program's file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): the save was interrupted; "
                              "use an earlier checkpoint")
    if not zipfile.is_zipfile(path):  # torch.save (since 1.6) and Lightning always write a zip archive
        raise CheckpointError(
            f"checkpoint {str(path)!r} ({path.stat().st_size} bytes) is truncated, corrupt or not a PyTorch "
            "file (not a zip archive as torch.save writes); use an earlier checkpoint"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains pickled Python objects other than tensors, containers and "
                "primitives, so it is not loaded (weights_only=True never runs code from a file). If you "
                "trust its source, re-save its 'state_dict' with torch.save, or load it with "
                f"SafeCheckpointIO(weights_only=False). torch said: {str(e).splitlines()[-1][:300]}"
            ) from e
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a PyTorch file: {e}") from e
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} ({path.stat().st_size} bytes) is truncated, corrupt or not a PyTorch "
            f"file ({type(e).__name__}: {str(e)[:200]}); use an earlier checkpoint"
        ) from e
    check_lightning_checkpoint(ckpt, path)
    return ckpt


def check_lightning_checkpoint(ckpt: Any, path: str | Path) -> None:
    """Raise `CheckpointError` naming `path` unless `ckpt` looks like a Lightning checkpoint."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(ckpt).__name__}, not a Lightning checkpoint dict "
            "with a 'state_dict' key"
        )
    if "state_dict" not in ckpt:
        keys = sorted(map(str, ckpt))[:8]
        hint = (" It looks like a bare model state_dict: wrap it as {'state_dict': ..., "
                "'pytorch-lightning_version': ...}." if keys and all(isinstance(v, torch.Tensor)
                                                                    for v in ckpt.values()) else "")
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a Lightning checkpoint: no 'state_dict' key (keys: {keys}).{hint}"
        )
    sd = ckpt["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {str(path)!r}: 'state_dict' is not a mapping of names to tensors")


def _describe(class_path: str | None, hparams: Mapping) -> str:
    """``AudioClassifier(backbone=CNN)``: a class (last part of its path) and the classes of its module
    arguments (hyper-parameters given as ``{"class_path", "init_args"}``)."""
    parts = [f"{k}={v['class_path'].rpartition('.')[2]}" for k, v in hparams.items()
             if isinstance(v, Mapping) and isinstance(v.get("class_path"), str)]
    name = class_path.rpartition(".")[2] if class_path else "an unnamed model"
    return f"{name}({', '.join(parts)})" if parts else name


def check_checkpoint_class(ckpt: Mapping, path: str | Path, class_path: str | None) -> None:
    """Raise `CheckpointError` when the checkpoint's hyper-parameters name another LightningModule class
    (``_class_path``, written by LightningCLI) than ``class_path``, the config's model."""
    saved = (ckpt.get("hyper_parameters") or {}).get("_class_path")
    if saved and class_path and saved != class_path:
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {saved} (its hyper-parameters' _class_path) but the config's model "
            f"is {class_path}: give the config it was trained with"
        )


def check_checkpoint_fits(ckpt: Mapping, path: str | Path, model: nn.Module, linked: tuple[str, ...] = (),
                          source: str = "the data") -> None:
    """Raise `CheckpointError` (one line) when the checkpoint's weights cannot load into ``model``, before any
    work: first a size the data decides (``linked``, e.g. ``num_classes``) that differs between the
    checkpoint's hyper-parameters and ``model.hparams`` (``source`` names where the model's value came from),
    then what ``model.load_state_dict`` finds (it loads the weights, as the run will again: state-dict
    pre-hooks apply): missing / unexpected keys (unless ``model.strict_loading`` is off; naming both
    classes) and parameters whose shapes differ."""
    hp, own_hp = ckpt.get("hyper_parameters") or {}, getattr(model, "hparams", {}) or {}
    for key in linked:
        saved, given = hp.get(key), own_hp.get(key)
        if isinstance(saved, int) and isinstance(given, int) and saved != given:
            raise CheckpointError(f"checkpoint {str(path)!r} was trained with {key}={saved} but {source} gives "
                                  f"{key}={given}: use the data it was trained on (or a matching checkpoint)")
    theirs, strict = ckpt["state_dict"], getattr(model, "strict_loading", True)
    ours = _describe(f"{type(model).__module__}.{type(model).__qualname__}", own_hp)
    error = None
    try:  # torch's own rules (state-dict pre-hooks renaming former keys, lazy parameters); the run loads the
        # same weights again when it starts, so loading them here changes nothing
        result = model.load_state_dict(theirs, strict=False)
        missing, unexpected = result.missing_keys, result.unexpected_keys
    except RuntimeError as e:  # shapes differ (raised whatever `strict`)
        own, error = model.state_dict(), e
        missing, unexpected = [k for k in own if k not in theirs], [k for k in theirs if k not in own]
    if (missing or unexpected) and strict:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

        raise CheckpointError(
            f"checkpoint {str(path)!r} ({_describe(hp.get('_class_path'), hp)}) does not fit the configured model "
            f"{ours}: {len(missing)} missing keys ({few(missing)}), {len(unexpected)} unexpected keys "
            f"({few(unexpected)}); give the config it was trained with"
        ) from error
    if error is not None:
        own = model.state_dict()
        wrong = [(k, list(theirs[k].shape), list(v.shape)) for k, v in own.items()
                 if k in theirs and theirs[k].shape != v.shape]
        detail = (f"{wrong[0][0]} has shape {wrong[0][1]} in the checkpoint, {wrong[0][2]} in the model"
                  + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "") if wrong
                  else " ".join(str(error).split())[:300])
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit the configured model {ours}: {detail}") \
            from error


def _make_safe_checkpoint_io() -> type:
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class SafeCheckpointIO(TorchCheckpointIO):
        """Lightning `CheckpointIO` that loads through `load_checkpoint` (weights-only, clear errors).

        Saving is Lightning's own (atomic write). `weights_only=False` is an explicit opt-out for trusted
        legacy files; Lightning's per-call `weights_only` argument can only tighten it.
        """

        def __init__(self, weights_only: bool = True) -> None:
            super().__init__()
            self.weights_only = weights_only

        def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
            weights_only = self.weights_only or bool(weights_only)
            if "://" in str(path):  # remote (fsspec) paths: Lightning's loader, still weights-only
                ckpt = super().load_checkpoint(path, weights_only=weights_only)
                check_lightning_checkpoint(ckpt, path)
                return ckpt
            return load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    SafeCheckpointIO.__module__, SafeCheckpointIO.__qualname__ = __name__, "SafeCheckpointIO"
    return SafeCheckpointIO


def __getattr__(name: str):
    # SafeCheckpointIO is built on first access: importing Lightning takes seconds, and the
    # `resume-path` command that the sbatch scripts run before every (re)start does not need it.
    if name == "SafeCheckpointIO":
        cls = globals()["SafeCheckpointIO"] = _make_safe_checkpoint_io()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def find_resume_checkpoint(*dirs: str | Path) -> Path | None:
    """The newest loadable checkpoint in `dirs`, or None.

    Candidates in each directory: Lightning's SLURM `hpc_ckpt_*.ckpt` (written on the requeue signal into
    the trainer's `default_root_dir`) and `last*.ckpt` (ModelCheckpoint `save_last`). Lightning's own
    `ckpt_path="last"` ignores hpc checkpoints and `ckpt_path=None` ignores a newer `last.ckpt` (a requeue
    after a node failure); this picks the newest by modification time and skips files that do not load
    (a save killed half-way).
    """
    candidates = {p for d in map(Path, dirs) for pat in ("hpc_ckpt_*.ckpt", "last*.ckpt") for p in d.glob(pat)}
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            load_checkpoint(path)
        except CheckpointError as e:
            print(f"skipping {e}", file=sys.stderr)
            continue
        return path
    return None


_PLAIN = (bool, int, float, str, type(None), list, tuple, dict)


def callable_spec(fn: Callable | Mapping) -> dict | None:
    """``{"class_path", "init_args"}`` of a class, of a ``functools.partial`` of one (what jsonargparse gives for a
    ``class_path`` config) or of such a dict, when its bound arguments are plain values; None otherwise (a
    callable that cannot be saved as data)."""
    if isinstance(fn, Mapping):
        return {"class_path": fn["class_path"], "init_args": dict(fn.get("init_args") or {})}
    target, kwargs = fn, {}
    while isinstance(target, functools.partial):
        kwargs = {**target.keywords, **kwargs}
        target = next((a for a in target.args if inspect.isclass(a)), target.func)
    if not inspect.isclass(target) or not all(isinstance(v, _PLAIN) for v in kwargs.values()):
        return None
    return {"class_path": f"{target.__module__}.{target.__qualname__}", "init_args": kwargs}


def build_from_spec(fn: Callable | Mapping, *args: Any) -> Any:
    """``fn(*args)``, where ``fn`` is a callable or a :func:`callable_spec` dict (its class is imported by path
    and called with ``*args`` and its ``init_args``)."""
    if isinstance(fn, Mapping):
        module, _, name = fn["class_path"].rpartition(".")
        return getattr(importlib.import_module(module), name)(*args, **(fn.get("init_args") or {}))
    return fn(*args)


def _backbone_spec(ckpt: Mapping, path: Path, backbone: Mapping | None) -> tuple[dict, int | None]:
    """``({class_path, init_args}, num_classes)`` of the backbone of the checkpoint at ``path``: ``backbone`` when
    given, else the checkpoint's hyper-parameters, else the run's ``config.yaml`` (train.py writes it beside the
    logger's directory) next to the checkpoint or one level up (``runs/NAME/checkpoints/last.ckpt`` ->
    ``runs/NAME/config.yaml``)."""
    hp = dict(ckpt.get("hyper_parameters") or {})
    spec, num_classes = backbone, hp.get("num_classes")
    if spec is None and isinstance(hp.get("backbone"), Mapping):
        spec = hp["backbone"]
    for cfg in (path.parent / "config.yaml", path.parent.parent / "config.yaml"):
        if (spec is not None and num_classes is not None) or not cfg.exists():
            continue
        with open(cfg) as f:
            init = ((yaml.safe_load(f) or {}).get("model") or {}).get("init_args") or {}
        spec = spec if spec is not None else init.get("backbone")
        num_classes = num_classes if num_classes is not None else init.get("num_classes")
    if not isinstance(spec, Mapping) or "class_path" not in spec:
        raise ValueError(
            f"checkpoint {str(path)!r}: cannot tell its backbone class; give `backbone: {{class_path: "
            "audiognn.models.cnn.CNN, init_args: {...}}` (as in the training config)"
        )
    return {"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {})}, num_classes


def load_backbone(checkpoint: str | Path, backbone: Mapping | None = None, prefix: str = "backbone.") -> nn.Module:
    """The trained backbone of an audio classifier checkpoint, built from its class and loaded, in eval mode.

    A classifier takes its backbone as a callable of the class count, so the checkpoint's weights do not say
    which class they belong to: ``backbone = {"class_path": ..., "init_args": {...}}`` names it (default: from
    the checkpoint's hyper-parameters, else the run's ``config.yaml`` beside the checkpoint or one level up:
    ``runs/NAME/checkpoints/last.ckpt`` -> ``runs/NAME/config.yaml``). The class is imported by its path, built
    as ``cls(num_classes, **init_args)`` by :func:`build_from_spec` (``num_classes`` from the hyper-parameters or
    the config) and given the checkpoint's ``prefix*`` weights (strict), read with :func:`load_checkpoint`.
    Raises ``ValueError`` when the class cannot be told or is not an :class:`AudioBackbone` (it must have
    ``embed``), :class:`CheckpointError` for a missing or damaged file.
    """
    path = Path(checkpoint)
    ckpt = load_checkpoint(path)
    spec, num_classes = _backbone_spec(ckpt, path, backbone)
    if num_classes is None:
        raise ValueError(f"checkpoint {str(path)!r}: no `num_classes` in its hyper-parameters or config.yaml")
    model = build_from_spec(spec, int(num_classes))
    if not isinstance(model, AudioBackbone):
        raise ValueError(f"checkpoint {str(path)!r}: backbone {spec['class_path']} is not an AudioBackbone "
                         "(it needs `embed`)")
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"checkpoint {str(path)!r} holds no '{prefix}*' weights")
    model.load_state_dict(state)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audiognn.checkpoint", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("resume-path", help="print the newest loadable hpc_ckpt_*.ckpt / last*.ckpt in DIRS "
                       "(nothing if none)")
    p.add_argument("dirs", nargs="+")
    p = sub.add_parser("check", help="load checkpoints safely and print their step and number of tensors")
    p.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "resume-path":
        found = find_resume_checkpoint(*args.dirs)
        if found is not None:
            print(found)
        return 0
    status = 0
    for path in args.paths:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: epoch={ckpt.get('epoch')} global_step={ckpt.get('global_step')} "
              f"tensors={len(ckpt['state_dict'])} averaged={'current_model_state' in ckpt}")
    return status


if __name__ == "__main__":
    sys.exit(main())
