"""bench/genre_compare.py runs end to end on a tiny synthetic set and prints the table + PNGs."""

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]



def test_genre_compare_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("genre_compare", ROOT / "bench" / "genre_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    n = torch.get_num_threads()
    try:
        rc = mod.main(
            [
                "--out",
                str(tmp_path),
                "--epochs",
                "1",
                "--train",
                "32",
                "--val",
                "8",
                "--test",
                "16",
                "--frames",
                "64",
                "--batch-size",
                "16",
            ]
        )
    finally:
        torch.set_num_threads(n)
    assert rc == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["model", "gnn", "cnn", "rnn", "linkpred"]
    for r in rows[1:]:
        acc, f1 = float(r.split("|")[2]), float(r.split("|")[3])
        assert 0.0 <= acc <= 1.0 and 0.0 <= f1 <= 1.0
    assert "| cnn |" in out and "1.00x" in out
    for m in ("gnn", "cnn", "rnn", "linkpred"):
        assert (tmp_path / f"confusion_{m}.png").stat().st_size > 1000
