"""Composed configs, run directories and a quiet console for ``train.py``.

**Composition.** A recipe names the shared fragments it builds on in a top-level ``compose:`` list (paths
relative to the repository root, e.g. ``conf/base/run.yaml``); :func:`expand_configs` puts each fragment
(recursively, each once) as a ``--config`` before the recipe, so the recipe holds only what differs. An
*overlay* (``conf/trainer/*.yaml``, ``conf/genre/gtzan.yaml``, ...) declares the recipes it goes with in a
top-level ``overlay:`` list of glob patterns; given first (alone), it stops with a message saying to put a
recipe first.

**Run directories.** Every path of an invocation derives from ``<trainer.default_root_dir>/<run.name>``
(:func:`resolve_run_dir`): ``fit`` creates ``version_N`` (the next free number, created atomically, so a
re-run never touches an earlier run; ``--ckpt_path last`` resumes the latest version in place);
``validate`` / ``test`` / ``predict`` create ``<subcommand>_N`` inside the training run that holds their
checkpoint (``.../version_3/checkpoints/x.ckpt`` -> ``.../version_3/test_0``), beside and never over its
``config.yaml``. ``--run.dir DIR`` pins the directory (SLURM jobs, so that requeues reuse it).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ("fit", "validate", "test", "predict")
# a run directory fixed by rank 0 for the processes Lightning starts itself (DDP launcher)
RUN_DIR_ENV = "AUDIOGNN_RUN_DIR"
WANDB_MODES = ("offline", "online", "disabled")


# --- composition ------------------------------------------------------------------------------------------
def _read(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}  # jsonargparse reports unreadable configs itself
    return data if isinstance(data, dict) else {}


def repo_path(path: str | Path) -> Path:
    """``path`` as given when it exists (absolute or relative to the working directory), else relative to the
    repository root (so ``conf/...`` works from anywhere)."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else ROOT / p


def _config_indices(argv: Sequence[str]) -> list[tuple[int, str]]:
    """(position, path) of every ``--config PATH`` / ``--config=PATH`` in ``argv``."""
    found = []
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            found.append((i, argv[i + 1]))
        elif a.startswith("--config="):
            found.append((i, a.split("=", 1)[1]))
    return found


def fragments_of(path: str | Path, seen: set[Path] | None = None) -> list[Path]:
    """The fragments a config composes, depth first (a fragment's own fragments first), each once."""
    seen = set() if seen is None else seen
    out = []
    for frag in _read(repo_path(path)).get("compose") or []:
        p = repo_path(frag).resolve()
        if p in seen:
            continue
        if not p.is_file():
            raise SystemExit(f"{path}: compose: fragment {frag!r} does not exist")
        seen.add(p)
        out += fragments_of(p, seen) + [p]
    return out


def overlay_patterns(path: str | Path) -> list[str] | None:
    """The recipe patterns an overlay declares (``overlay:``), or None for a recipe."""
    pats = _read(repo_path(path)).get("overlay")
    return [str(p) for p in pats] if pats else None


def overlay_recipes(path: str | Path, recipes: Sequence[Path]) -> list[Path]:
    """The recipes among ``recipes`` (paths under the repository) that the overlay ``path`` goes with."""
    pats = overlay_patterns(path) or []
    rel = {r: str(r.resolve().relative_to(ROOT)) for r in recipes}
    return [r for r in recipes if any(fnmatch.fnmatch(rel[r], p) for p in pats)]


def _merge(base: dict, over: dict) -> dict:
    """``over`` on ``base`` as jsonargparse composes configs: mappings merge (a new ``class_path`` starts its
    ``init_args`` afresh), lists and values replace, ``key+`` appends to the list at ``key``."""
    out = dict(base)
    if "class_path" in over and over.get("class_path") != base.get("class_path"):
        out.pop("init_args", None)
    for key, value in over.items():
        if key.endswith("+"):
            key = key[:-1]
            out[key] = list(out.get(key) or []) + (value if isinstance(value, list) else [value])
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_composed(path: str | Path) -> dict:
    """A recipe as one plain mapping: its ``compose:`` fragments merged under it (``compose`` removed), for
    tools that read or rewrite a recipe (the fold runner, benchmarks)."""
    merged: dict = {}
    for part in [*fragments_of(path), repo_path(path)]:
        merged = _merge(merged, _read(part))
    merged.pop("compose", None)
    return merged


def expand_configs(argv: list[str]) -> list[str]:
    """Insert every config's ``compose:`` fragments before it; stop when the first config is an overlay."""
    configs = _config_indices(argv)
    if configs and overlay_patterns(configs[0][1]):
        first = configs[0][1]
        example = (overlay_patterns(first) or ["conf/default.yaml"])[0].replace("*", "<recipe>")
        raise SystemExit(
            f"{first} is an overlay, not a recipe: put a recipe first, e.g.\n"
            f"  python train.py {argv[0] if argv and argv[0] in SUBCOMMANDS else 'fit'} --config {example} "
            f"--config {first}\n(it goes with: {', '.join(overlay_patterns(first) or [])})")
    seen: set[Path] = set()
    starts, out = dict(configs), []
    for i, arg in enumerate(argv):
        if i in starts:
            out += [x for frag in fragments_of(starts[i], seen) for x in ("--config", str(frag))]
        out.append(arg)
    return out


# --- run directories --------------------------------------------------------------------------------------
def _next_free(parent: Path, prefix: str) -> Path:
    """Create and return ``parent/<prefix>N`` for the smallest free N (atomic: two runs never share one)."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", p.name))]
    n = max(taken, default=-1) + 1
    while True:
        try:
            (parent / f"{prefix}{n}").mkdir()
            return parent / f"{prefix}{n}"
        except FileExistsError:
            n += 1


def latest_version(base: Path) -> Path | None:
    """The highest ``version_N`` directory under ``base``, or None."""
    found = [(int(p.name.split("_")[1]), p) for p in base.glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
    return max(found)[1] if found else None


def training_run_of(ckpt_path: str | Path | None) -> Path | None:
    """The run directory a checkpoint file belongs to (``RUN/checkpoints/x.ckpt`` -> ``RUN``), or None."""
    if not ckpt_path or str(ckpt_path) in ("last", "best", "hpc", "registry"):
        return None
    p = Path(str(ckpt_path)).resolve()
    return p.parent.parent if p.parent.name == "checkpoints" else None


def _is_child_process() -> bool:
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def resolve_run_dir(subcommand: str, root: str | Path, name: str, run_dir: str | Path | None = None,
                    ckpt_path: str | Path | None = None) -> Path:
    """The directory of this invocation (created); see the module docstring for the rules."""
    pinned = os.environ.get(RUN_DIR_ENV)
    if pinned and _is_child_process():  # a DDP process Lightning started: rank 0 already chose
        return Path(pinned)
    base = Path(root) / name
    if subcommand == "fit":
        if run_dir:
            out = Path(run_dir)
        elif str(ckpt_path) == "last" and latest_version(base) is not None:
            out = latest_version(base)
        elif int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and os.environ.get("SLURM_JOB_ID"):
            out = base / f"job{os.environ['SLURM_JOB_ID']}"  # srun tasks start together: one name for all
        else:
            out = _next_free(base, "version_")
        out.mkdir(parents=True, exist_ok=True)
        _link_latest(base, out)
    else:
        parent = Path(run_dir) if run_dir else training_run_of(ckpt_path) or base
        out = _next_free(parent, f"{subcommand}_")
    os.environ[RUN_DIR_ENV] = str(out)
    return out


def _link_latest(base: Path, run: Path) -> None:
    """``<base>/latest`` -> the newest fit run (best effort: skipped where links are not allowed)."""
    if run.parent.resolve() != base.resolve():
        return
    link = base / "latest"
    try:
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.symlink_to(run.name, target_is_directory=True)
    except OSError:
        pass


def discard_if_empty(run: Path) -> None:
    """Remove a run directory this invocation created and left empty (it stopped on bad input before any work),
    point ``latest`` back at the newest run that remains and remove the run name's directory and the root when
    nothing is left in them. A directory holding anything is kept."""
    try:
        if not run.is_dir() or any(run.iterdir()):
            return
        run.rmdir()
        base = run.parent
        link = base / "latest"
        if link.is_symlink() and not link.exists():
            link.unlink()
            if (newest := latest_version(base)) is not None:
                _link_latest(base, newest)
        for parent in (base, base.parent):  # the run name's directory, then the root, when nothing is left
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    except OSError:
        pass


def wandb_mode(configured: str) -> str:
    """``WANDB_MODE`` when set (``dryrun`` = offline), else the config's ``run.wandb``."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    mode = {"dryrun": "offline", "run": "online"}.get(env, env) or configured
    if mode not in WANDB_MODES:
        raise SystemExit(f"run.wandb / WANDB_MODE must be one of {WANDB_MODES}, got {mode!r}")
    return mode


# --- console ----------------------------------------------------------------------------------------------
NOISY_WARNINGS = (  # library messages that every run prints and no user can act on
    r".*isinstance\(treespec, LeafSpec\).*",
    r"Your `IterableDataset` has `__len__` defined.*",
    r"The number of training batches \(\d+\) is smaller than the logging interval.*",
    r".*does not have many workers which may be a bottleneck.*",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def quiet_wandb() -> None:
    """With ``WANDB_SILENT=true``, wandb's warnings before its own set-up (a deprecation notice about a setting
    Lightning passes) go to a logger that shows errors only."""
    if os.environ.get("WANDB_SILENT", "").lower() != "true":
        return
    import wandb

    log = logging.getLogger("audiognn.wandb")
    log.setLevel(logging.ERROR)
    wandb.termsetup(wandb.Settings(silent=True), log)


def quiet_console(stdout_is_tty: bool) -> None:
    """Filter known library noise, show this package's INFO messages, and keep progress bars short when the
    output is a file (``TQDM_MININTERVAL``; Lightning's bar is replaced by line progress in train.py)."""
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropTips())
    os.environ.setdefault("WANDB_SILENT", "true")  # its banner, anonymous-mode and git-root warnings
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    if not stdout_is_tty:  # effective only where tqdm is imported later (train.py sets it first)
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name in ("audiognn", "datamodules", "callbacks"):
        log = logging.getLogger(name)
        if not log.handlers:
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False
