"""Ensembles of finished runs from their stored per-clip class scores.

A run that tests a single-label classifier can keep each test clip's key, class scores (softmax) and target
class (``callbacks.metrics_json.TestScoresToJson``, read back by ``read_test_scores``; ``bench/real_audio.py``
keeps them in its records). The ensemble of several runs on the same test clips -- a model trained with
different seeds, say -- averages each clip's scores over the runs and takes the argmax; it is scored like one
run: accuracy (micro) and macro-F1 with torchmetrics, as ``AudioClassifier`` computes ``test/acc`` and
``test/f1``, and the confusion matrix.
Clips are matched by key, so the runs may list them in any order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def score_ensemble(runs: Sequence[dict], num_classes: int, names: Sequence[str] | None = None) -> dict:
    """The ensemble of ``runs``, each ``{"keys": [N], "scores": [N][C], "targets": [N]}`` over the same clips.

    Returns ``{"acc", "f1", "cm", "clips", "members"}``. ``names`` (one per run) label the errors: a run with
    other clips, duplicate keys, another number of classes or a target that disagrees stops with a ValueError
    that names the run and what was expected."""
    import torch
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    if not runs:
        raise ValueError("score_ensemble: no runs to combine")
    names = list(names) if names is not None else [f"run {i}" for i in range(len(runs))]
    keys = list(runs[0]["keys"])
    index = {k: i for i, k in enumerate(keys)}
    total = torch.zeros(len(keys), num_classes, dtype=torch.float64)
    target = torch.full((len(keys),), -1, dtype=torch.long)
    for name, r in zip(names, runs, strict=True):
        if len(set(r["keys"])) != len(r["keys"]):
            raise ValueError(f"{name}: duplicate test clip keys")
        if set(r["keys"]) != set(keys):
            raise ValueError(f"{name}: tested other clips than {names[0]} ({len(r['keys'])} against "
                             f"{len(keys)}); an ensemble needs the same test clips")  # fmt: skip
        scores = torch.tensor(r["scores"], dtype=torch.float64).reshape(len(r["keys"]), -1)
        if scores.shape[1] != num_classes:
            raise ValueError(f"{name}: {scores.shape[1]} class scores per clip, expected {num_classes}")
        rows = torch.tensor([index[k] for k in r["keys"]], dtype=torch.long)
        t = torch.tensor(r["targets"], dtype=torch.long)
        if (target[rows] >= 0).all() and not torch.equal(target[rows], t):
            raise ValueError(f"{name}: its target classes differ from {names[0]}'s for the same clips")
        total[rows] += scores
        target[rows] = t
    pred = total.argmax(1)
    return {"acc": float(multiclass_accuracy(pred, target, num_classes, average="micro")),
            "f1": float(multiclass_f1_score(pred, target, num_classes, average="macro")),
            "cm": multiclass_confusion_matrix(pred, target, num_classes).tolist(),
            "clips": len(keys), "members": list(names)}  # fmt: skip


def read_test_scores(path: str | Path) -> dict:
    """The scores ``TestScoresToJson`` wrote to ``path``, with those of the other DDP ranks (``path.rank*``);
    a clip seen twice (a distributed sampler pads the last batch with repeated clips) is kept once."""
    path = Path(path)
    files = [path, *sorted(path.parent.glob(path.name + ".rank*"))]
    out: dict = {"keys": [], "scores": [], "targets": [], "classes": []}
    seen: set[str] = set()
    for f in files:
        try:
            d = json.loads(f.read_text())
            parts = d["keys"], d["scores"], d["targets"]
            if len({len(p) for p in parts}) != 1:
                raise ValueError(f"{len(parts[0])} keys, {len(parts[1])} score rows, {len(parts[2])} targets")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{f}: not a test-scores file written by TestScoresToJson ({e})") from None
        out["classes"] = out["classes"] or d.get("classes", [])
        for k, s, t in zip(*parts):
            if k not in seen:
                seen.add(k)
                out["keys"].append(k)
                out["scores"].append(s)
                out["targets"].append(t)
    return out
