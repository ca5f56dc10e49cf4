"""GenreGNN, RNN and CNN each learn the synthetic genre set (8 classes, chance 0.125) far above chance."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from audiognn.models.genre_gnn import GenreGNN
from audiognn.models.rnn import RNN

NUM_CLASSES = 8
THRESHOLD = 0.6  # test accuracy after 4 epochs on 160 clips; chance = 1/8



@pytest.fixture(scope="module")
def genre_set(tmp_path_factory):
    from audiognn.features import FeatureConfig
    from datamodules.genre_graph import read_dataset_json, read_shard_clips
    from datamodules.prepare import prepare, synthetic_result

    root = tmp_path_factory.mktemp("genre")
    prepare(
        synthetic_result("genre", 160, 0, 64, seed=0),
        root,
        FeatureConfig(target_frames=300),
        workers=1,
        progress=False,
    )
    norm = read_dataset_json(root)["norm"]

    def load(split):
        clips = read_shard_clips(root, split)
        x = torch.stack([torch.from_numpy(c["mel"]) for c in clips])  # [n, T, F]
        return (x - norm["mean"]) / norm["std"], torch.tensor([c["labels"][0] for c in clips])

    return load("train"), load("test")


def _fit_and_score(model, data, epochs=4, lr=3e-3, batch=16):
    (xtr, ytr), (xte, yte) = data
    assert len(set(ytr.tolist())) == NUM_CLASSES
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(xte).argmax(-1) == yte).float().mean().item()


@pytest.mark.parametrize("conv", ["sage", "gcn"])
def test_genre_gnn_learns_synthetic_genres(genre_set, conv):
    acc = _fit_and_score(GenreGNN(NUM_CLASSES, hidden=64, num_layers=2, conv=conv), genre_set)
    assert acc >= THRESHOLD, f"GenreGNN({conv}) test accuracy {acc:.3f} < {THRESHOLD}"


def test_rnn_learns_synthetic_genres(genre_set):
    acc = _fit_and_score(RNN(NUM_CLASSES, cell="gru", hidden=64, num_layers=1), genre_set)
    assert acc >= THRESHOLD, f"RNN test accuracy {acc:.3f} < {THRESHOLD}"


@pytest.mark.skipif(
    importlib.util.find_spec("audiognn.models.cnn") is None, reason="audiognn/models/cnn.py not written yet"
)
def test_cnn_learns_synthetic_genres(genre_set):
    from audiognn.models.cnn import CNN

    acc = _fit_and_score(CNN(NUM_CLASSES, channels=(8, 16, 32, 64)), genre_set)  # conf/default.yaml's CNN
    assert acc >= THRESHOLD, f"CNN test accuracy {acc:.3f} < {THRESHOLD}"
