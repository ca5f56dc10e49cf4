"""One-line errors for ``train.py``: what is wrong with a run, said before any work and without a traceback.

A mistake in what the user gave (a config file that is not valid YAML, a data directory without
``dataset.json``, ``--data.batch_size 0``, a checkpoint of another model) is reported as one line
``error: <what, naming the file / key / value and what was expected>`` with exit code 2 (as argparse does for
a bad option), instead of jsonargparse's usage dump or a 70-line traceback through its type checks.

- :class:`RunError`: such an error; ``train.py`` prints it as one line and exits with 2.
- :func:`check_config_files`: every ``--config`` file of a command line exists and is valid YAML.
- :func:`instantiation_error`: the one-line form of an exception raised while the config's classes are built
  (the cause beneath jsonargparse's wrapping, prefixed by the class whose ``__init__`` raised it), or None
  for an exception that is a bug rather than a mistake in the input (its traceback is then kept).

Set ``AUDIOGNN_TRACEBACK=1`` to get the full traceback of an input error as well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from audiognn.data.shards import ShardError

# exceptions that report a mistake in the input (files, values), not a bug of the program
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ShardError)
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


class RunError(Exception):
    """A mistake in a run's input, reported by ``train.py`` as one line (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the source message held


def show_traceback() -> bool:
    """Whether ``AUDIOGNN_TRACEBACK`` asks for full tracebacks instead of one-line errors."""
    return os.environ.get("AUDIOGNN_TRACEBACK", "") not in ("", "0")


def config_paths(argv: Sequence[str]) -> list[str]:
    """The values of ``--config X`` / ``--config=X`` / ``-c X`` in ``argv``."""
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_files(argv: Sequence[str]) -> None:
    """Raise :class:`RunError` naming the file (and line, column) when a ``--config`` file of ``argv`` is
    missing or not valid YAML. Inline YAML (``--config '{trainer: {...}}'``) is left to jsonargparse."""
    for value in config_paths(argv):
        path = Path(value)
        if not path.is_file():
            if path.suffix in CONFIG_SUFFIXES and "\n" not in value:
                raise RunError(f"config file {value!r} does not exist (--config expects a YAML file)")
            continue
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e)
            context = getattr(e, "context", None)
            raise RunError(f"config file {value!r}{where}: invalid YAML: {problem}"
                           + (f" ({context})" if context else "")) from e


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__``, else ``__context__``), outermost first."""
    out, seen = [exc], {id(exc)}
    while (nxt := out[-1].__cause__ or out[-1].__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        out.append(nxt)
    return out


def _raised_by_parser(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by jsonargparse / LightningCLI themselves (a wrapper, not the cause)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.startswith(("jsonargparse", "lightning.pytorch.cli"))


def _raised_in(exc: BaseException) -> str | None:
    """The class whose ``__init__`` raised ``exc`` (the innermost such frame of its traceback), if any."""
    owner, tb = None, exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "__init__" and "self" in frame.f_locals:
            owner = type(frame.f_locals["self"]).__name__
        tb = tb.tb_next
    return owner


def instantiation_error(exc: BaseException) -> RunError | None:
    """The :class:`RunError` for an exception raised while building the config's classes when its root
    cause is an input error (``ValueError``, ``OSError``, ``ShardError``), e.g. ``"AudioShardDataModule:
    batch_size must be >= 1, got 0"``; None for other exceptions (bugs keep their traceback)."""
    if isinstance(exc, RunError):
        return exc
    # the outermost input error raised by our code (a DataModule's own message, not the OSError beneath it)
    cause = next((e for e in chain(exc) if isinstance(e, INPUT_ERRORS) and not _raised_by_parser(e)), None)
    if cause is None or show_traceback():
        return None
    owner = _raised_in(cause)
    return RunError(f"{owner}: {cause}" if owner else str(cause))
