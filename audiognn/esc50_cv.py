"""Alias kept for ``python -m audiognn.esc50_cv``: the fold runner lives in `audiognn.cli.cross_validate`."""

from audiognn.cli.cross_validate import main, run_config, summarise

__all__ = ["main", "run_config", "summarise"]

if __name__ == "__main__":
    raise SystemExit(main())
