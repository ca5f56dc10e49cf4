"""Alias kept for ``python -m callbacks.average_checkpoints``: the tool lives in `audiognn.cli.average_checkpoints`."""

from audiognn.cli.average_checkpoints import average_checkpoints, average_state_dicts, main, weights_of

__all__ = ["average_checkpoints", "average_state_dicts", "main", "weights_of"]

if __name__ == "__main__":
    raise SystemExit(main())
