"""GenreGNN and RNN: graph builder against brute force, every conv runs forward/backward, shapes."""

import math
import warnings
from pathlib import Path

import pytest
import torch

from audiognn.models.genre_gnn import (
    CONVS,
    CompleteGraphWarning,
    GenreGNN,
    num_segments,
    segment_frames_of,
    segment_knn_graph,
)
from audiognn.models.rnn import RNN


def _brute_force_edges(feats, k, temporal, metric):
    B, S, _ = feats.shape
    edges = set()
    for b in range(B):
        for i in range(S):
            d = []
            for j in range(S):
                if j == i:
                    continue
                u, v = feats[b, i].double(), feats[b, j].double()
                if metric == "cosine":
                    dist = 1 - float(u @ v) / (float(u.norm()) * float(v.norm()))
                else:
                    dist = math.sqrt(float(((u - v) ** 2).sum()))
                d.append((dist, j))
            for _, j in sorted(d)[:k]:
                edges.add((b * S + j, b * S + i))
            if temporal and i + 1 < S:
                edges.add((b * S + i, b * S + i + 1))
                edges.add((b * S + i + 1, b * S + i))
    return edges


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("temporal", [True, False])
@pytest.mark.parametrize("k", [1, 3, 20])
def test_segment_knn_graph_equals_brute_force(metric, temporal, k):
    feats = torch.randn(3, 7, 5)
    ei = segment_knn_graph(feats, k=k, temporal=temporal, metric=metric)
    got = {tuple(e) for e in ei.t().tolist()}
    assert got == _brute_force_edges(feats, min(k, 6), temporal, metric)
    assert ei.shape[1] == len(got)  # no duplicates
    if not temporal:
        # every node receives exactly min(k, S-1) edges
        assert torch.bincount(ei[1], minlength=21).tolist() == [min(k, 6)] * 21


def test_segment_knn_graph_single_segment_has_no_edges():
    assert segment_knn_graph(torch.randn(2, 1, 4), k=4).shape == (2, 0)


def test_segments_cut_and_pad():
    x = torch.arange(2 * 10 * 3, dtype=torch.float).view(2, 10, 3)
    seg = segment_frames_of(x, 4, 3)  # starts 0, 3, 6 -> 3 segments, frame 9 dropped... (6+4=10 fits)
    assert seg.shape == (2, 3, 4, 3)
    assert torch.equal(seg[1, 2], x[1, 6:10])
    short = segment_frames_of(x[:, :2], 4, 4)  # shorter than a segment: zero-padded
    assert short.shape == (2, 1, 4, 3) and torch.equal(short[0, 0, 2:], torch.zeros(2, 3))


def test_node_features_are_mfcc_statistics():
    import torchaudio

    m = GenreGNN(4, n_mels=32, segment_frames=5, segment_hop=5, n_mfcc=13)  # non-overlapping
    x = torch.randn(2, 20, 32)
    feats = m.node_features_of(x)  # [2, 4, 26]
    # reference MFCC: torchaudio's MFCC transform applies the same DCT to a log-mel (log_mels=True on a
    # mel spectrogram gives log(mel + 1e-6)); here we apply the DCT directly to the given log-mel
    dct = torchaudio.functional.create_dct(13, 32, "ortho")
    mfcc = x @ dct
    assert feats.shape == (2, 4, 26)
    torch.testing.assert_close(feats[1, 2, :13], mfcc[1, 10:15].mean(0))
    torch.testing.assert_close(feats[1, 2, 13:], mfcc[1, 10:15].std(0, unbiased=False))


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("node_features", ["mfcc", "logmel", "conv"])
def test_every_conv_forward_backward(conv, node_features):
    m = GenreGNN(
        5,
        n_mels=16,
        segment_frames=4,
        conv=conv,
        node_features=node_features,
        hidden=16,
        num_layers=2,
        heads=2,
        k=3,
    )
    x = torch.randn(3, 37, 16, requires_grad=True)
    logits = m(x)
    assert logits.shape == (3, 5)
    assert m.embed(x).shape == (3, m.embed_dim)
    logits.logsumexp(-1).sum().backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads[-4:])
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # any T works, including a clip shorter than one segment
    m.eval()
    for T in (1, 4, 9, 100):
        assert m(torch.randn(2, T, 16)).shape == (2, 5)


def test_gnn_clips_are_independent():
    m = GenreGNN(3, n_mels=16, segment_frames=4, hidden=16).eval()
    x = torch.randn(4, 40, 16)
    torch.testing.assert_close(m(x)[1:2], m(x[1:2]), rtol=1e-4, atol=1e-5)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="conv must be one of"):
        GenreGNN(3, conv="cheb")
    with pytest.raises(ValueError, match=r"x \[B, T, 128\]"):
        GenreGNN(3)(torch.randn(2, 10, 64))
    with pytest.raises(ValueError, match="cell must be one of"):
        RNN(3, cell="rnn")
    with pytest.raises(ValueError, match=r"conv_channels must be None or a non-empty list .* got \[\]"):
        RNN(3, conv_channels=[])
    with pytest.raises(ValueError, match="time_pool must be an integer >= 1, got 0"):
        RNN(3, time_pool=0)
    with pytest.raises(ValueError, match=r"cnn_channels must be .* got cnn_channels=\[8\], conv_channels=\[4\]"):
        RNN(3, cnn_channels=[8], conv_channels=[4])
    with pytest.raises(ValueError, match=r"cnn_channels must be .* got cnn_channels=\[\]"):
        RNN(3, cnn_channels=[])
    with pytest.raises(ValueError, match="cnn_bands must be an integer >= 1, got 0"):
        RNN(3, cnn_channels=[8], cnn_bands=0)


def test_rnn_time_pool_averages_frames_before_the_rnn():
    """``time_pool=p``: the RNN reads ceil(T / p) steps, each the mean of p consecutive feature frames (the last
    step the mean of what is left), checked against the steps computed by hand."""
    torch.manual_seed(0)
    m = RNN(4, n_mels=16, n_mfcc=None, hidden=8, time_pool=4).eval()
    seen = []
    m.rnn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x = torch.randn(2, 10, 16)
    m(x)
    pooled = torch.stack([x[:, 0:4].mean(1), x[:, 4:8].mean(1), x[:, 8:10].mean(1)], dim=1)  # [2, 3, 16]
    bn = m.norm
    expected = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(seen[0], expected, rtol=1e-5, atol=1e-5)


def test_rnn_conv_frames_read_learned_features_of_every_frame():
    """With ``conv_channels`` the RNN's input is the frame encoder's output (one vector per frame, no MFCC):
    the RNN sees as many steps as the clip has frames, and changing one frame's mel bins changes the output
    only through the encoder (its grads are non-zero), not through the unused MFCC path."""
    torch.manual_seed(0)
    m = RNN(4, n_mels=16, n_mfcc=8, hidden=8, conv_channels=[4, 6]).eval()
    assert m.frames.out_dim == 6 and m.rnn.input_size == 6 and m.norm.num_features == 6
    seen = []
    m.rnn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    x = torch.randn(2, 25, 16, requires_grad=True)
    m(x).sum().backward()
    assert seen == [(2, 25, 6)]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.frames.parameters())
    torch.testing.assert_close(m(x[1:]), m(x)[1:], rtol=1e-4, atol=1e-5)


def test_crnn_reads_the_cnn_blocks_feature_map_step_by_step_with_bands_apart():
    """With ``cnn_channels`` (a CRNN) the RNN's steps are the time positions of the CNN blocks' feature map (T / 2
    per block), each step every (channel, band) mean of the map's bins in that band, checked against the map
    computed by hand; the CNN blocks get gradients and clips stay independent."""
    torch.manual_seed(0)
    m = RNN(4, n_mels=16, hidden=8, cnn_channels=[3, 5], cnn_bands=2).eval()
    assert m.rnn.input_size == 10 and m.norm.num_features == 10
    seen = []
    m.rnn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x = torch.randn(2, 20, 16, requires_grad=True)
    m(x).sum().backward()
    h = m.cnn(x.detach().unsqueeze(1))  # [2, 5, 5, 4]: 20 frames and 16 bins halved twice
    steps = torch.stack([torch.stack([h[:, c, t, 2 * b:2 * b + 2].mean(-1) for c in range(5) for b in range(2)], -1)
                         for t in range(5)], 1)  # [2, 5 steps, 5 channels x 2 bands]
    bn = m.norm
    expected = (steps - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(seen[0], expected, rtol=1e-5, atol=1e-5)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.cnn.parameters())
    torch.testing.assert_close(m(x[1:]), m(x)[1:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_rnn_shapes_and_grads(cell, bidirectional):
    m = RNN(4, cell=cell, bidirectional=bidirectional, n_mels=16, n_mfcc=8, hidden=8)
    x = torch.randn(3, 25, 16)
    out = m(x)
    assert out.shape == (3, 4) and m.embed(x).shape == (3, m.embed_dim)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    torch.testing.assert_close(m(x)[2:], m(x[2:]), rtol=1e-4, atol=1e-5)


# --- the similarity graph of the shipped configs is not complete -----------------------------------------------
def _shipped_gnn_settings():
    """(config, GenreGNN init args, clip frames) of every shipped config with a GenreGNN and the clip length it
    sees: the synthetic set's frames, GTZAN's 3 s training crops, UrbanSound8K's 4 s."""
    import yaml

    from audiognn.cli.runs import load_composed

    root = Path(__file__).resolve().parents[1] / "conf"
    load = lambda p: yaml.safe_load((root / p).read_text())  # noqa: E731
    gnn, us8k = load_composed(root / "genre/gnn.yaml"), load_composed(root / "urbansound8k/gnn.yaml")
    backbone = lambda c: c["model"]["init_args"]["backbone"]["init_args"]  # noqa: E731
    return [
        ("genre/gnn.yaml", backbone(gnn), gnn["data"]["init_args"]["synthetic"]["target_frames"]),
        ("genre/gnn.yaml + genre/gtzan.yaml", backbone(gnn), load("genre/gtzan.yaml")["data"]["init_args"]["train_crop_frames"]),
        ("urbansound8k/gnn.yaml", backbone(us8k), us8k["data"]["init_args"].get("train_crop_frames") or 400),
    ]


@pytest.mark.parametrize("where, init, frames", _shipped_gnn_settings(), ids=lambda v: v if isinstance(v, str) else "")
def test_shipped_configs_similarity_graph_is_not_complete(where, init, frames):
    """Fails when a shipped config links every segment to every other (k >= S - 1): the "edges by feature
    similarity" of Dhongade and Rovira (§4.3) would then carry no information."""
    init = {**init, "hidden": 16, "num_layers": 1}
    m = GenreGNN(4, **init).eval()
    S, k = m.num_segments(frames), m.k
    assert S >= 3 * k, f"{where}: {S} segments of {frames} frames for k={k}: the kNN graph is (nearly) complete"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompleteGraphWarning)
        g = m.graph(torch.randn(2, frames, m.n_mels))
    assert g.num_nodes == 2 * S
    src, dst = g.edge_index
    assert int((src // S != dst // S).sum()) == 0  # no edge between clips
    in_deg = torch.bincount(dst, minlength=2 * S)
    assert int(in_deg.max()) <= k + 2 < S - 1  # k similarity + 2 temporal neighbours at most, never all
    assert g.edge_index.shape[1] < 0.5 * 2 * S * (S - 1)


def test_complete_similarity_graph_warns():
    with pytest.warns(CompleteGraphWarning, match="complete"):
        segment_knn_graph(torch.randn(1, 9, 4), k=8)
    assert num_segments(256, 32, 32) == 8 and num_segments(256, 32, 8) == 29 and num_segments(10, 32, 8) == 1
    g = segment_knn_graph(torch.randn(1, 9, 4), k=8, temporal=False)  # complete indeed: 9 * 8 edges
    assert g.shape[1] == 9 * 8
