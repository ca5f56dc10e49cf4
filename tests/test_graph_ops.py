"""Graph operators of LHGNN (Singh et al.) against brute-force / float64 numpy references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audiognn.graph import (
    LHGConv,
    dense_dilated_knn,
    fuzzy_c_means,
    init_centroids,
    kmeans,
    max_gather,
    mean_shift,
    pool_keys,
    relative_position,
)
from audiognn.graph.relative_pos import RelativePositionCache


def _vig_sincos_square(dim: int, g: int) -> np.ndarray:
    """ViG / MAE get_2d_sincos_pos_embed (square grid), re-derived in numpy."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=float) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(g, dtype=float), np.arange(g, dtype=float)), 0)  # w first
    return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)


def test_relative_position_matches_vig_on_square_grid():
    dim, g = 16, 5
    pe = _vig_sincos_square(dim, g)
    ref = 2 * pe @ pe.T / dim  # ViG get_2d_relative_pos_embed
    ours = relative_position(dim, g, g, 1).double().numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    np.testing.assert_allclose(np.diag(ours), 1.0, atol=1e-6)


def test_relative_position_cache_reuses_tensor():
    cache = RelativePositionCache(8, 2)
    a, b = cache(6, 10, torch.device("cpu")), cache(6, 10, torch.device("cpu"))
    assert a is b and a.shape == (60, 3 * 5)


@pytest.mark.parametrize("reduce,dilation,k", [(1, 1, 5), (2, 2, 4), (3, 1, 3)])
def test_knn_equals_brute_force(reduce, dilation, k):
    B, C, H, W = 2, 8, 7, 9
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    y = pool_keys(x, reduce)  # [B, C, Hk, Wk]
    rel = relative_position(C, H, W, reduce)
    got = dense_dilated_knn(
        x.flatten(2).transpose(1, 2), y.flatten(2).transpose(1, 2), k, dilation, rel, max_elements=B * 20 * y[0, 0].numel()
    )  # small max_elements: several query chunks
    # brute force: full distance matrix of the normalised features, argsort, every d-th of the k*d nearest
    xn = F.normalize(x.flatten(2), dim=1).numpy()  # [B, C, N]
    yn = F.normalize(y.flatten(2), dim=1).numpy()  # [B, C, M]
    for b in range(B):
        dist = ((xn[b][:, :, None] - yn[b][:, None, :]) ** 2).sum(0) - rel.double().numpy()  # [N, M]
        want = np.argsort(dist, axis=1, kind="stable")[:, : k * dilation : dilation]
        np.testing.assert_array_equal(got[b].numpy(), want)


def test_pool_keys_ceil_mode_covers_every_node():
    x = torch.randn(1, 4, 5, 7)
    assert pool_keys(x, 4).shape[-2:] == (2, 2)
    assert pool_keys(x, 1) is x


def _fcm_numpy(x, c, m, iters):
    """Eqs. 1-2 literally, float64: u_ip = 1 / sum_j (d_ip / d_ij)^(2/(m-1)); c_p = sum u^m x / sum u^m."""
    x, c = x.astype(np.float64), c.astype(np.float64)
    for _ in range(iters):
        d = np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1))  # [N, P]
        u = 1.0 / ((d[:, :, None] / d[:, None, :]) ** (2.0 / (m - 1))).sum(-1)  # eq. 1
        w = u**m
        c = (w.T @ x) / w.sum(0)[:, None]  # eq. 2
    return c, u


@pytest.mark.parametrize("m,iters", [(2.0, 1), (1.5, 3)])
def test_fcm_equals_numpy_eqs_1_2(m, iters):
    B, N, C, P = 2, 40, 6, 5
    x = torch.randn(B, N, C, dtype=torch.float64)
    c0 = torch.randn(B, P, C, dtype=torch.float64)
    c, u = fuzzy_c_means(x, c0, m, iters)
    for b in range(B):
        c_ref, u_ref = _fcm_numpy(x[b].numpy(), c0[b].numpy(), m, iters)
        np.testing.assert_allclose(u[b].numpy(), u_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(c[b].numpy(), c_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(u.sum(-1).numpy(), 1.0, atol=1e-12)


def test_kmeans_and_mean_shift_equal_numpy():
    N, C, P = 50, 4, 6
    x = torch.randn(1, N, C, dtype=torch.float64)
    c0 = x[:, :P].clone()
    xn, cn = x[0].numpy(), c0[0].numpy().copy()
    for _ in range(2):  # Lloyd
        a = ((xn[:, None] - cn[None]) ** 2).sum(-1).argmin(1)
        cn = np.stack([xn[a == p].mean(0) if (a == p).any() else cn[p] for p in range(P)])
    np.testing.assert_allclose(kmeans(x, c0, 2)[0].numpy(), cn, rtol=1e-10)
    cn = c0[0].numpy().copy()
    d2 = ((xn[:, None] - cn[None]) ** 2).sum(-1)
    h2 = np.sort(d2.min(1))[(N - 1) // 2]  # lower median, as torch.median
    for _ in range(2):  # mean shift, Gaussian kernel
        w = np.exp(-d2 / (2 * h2))
        cn = (w.T @ xn) / w.sum(0)[:, None]
        d2 = ((xn[:, None] - cn[None]) ** 2).sum(-1)
    np.testing.assert_allclose(mean_shift(x, c0, 2)[0].numpy(), cn, rtol=1e-8)


def test_pool_init_is_deterministic_grid_mean():
    x = torch.arange(2 * 8 * 3, dtype=torch.float32).view(1, 16, 3)  # 4 x 4 grid of 3 channels
    c = init_centroids(x, 4, "pool", (4, 4))  # 2 x 2 cells
    grid = x.transpose(1, 2).reshape(1, 3, 4, 4)
    assert torch.allclose(c[0, 0], grid[0, :, :2, :2].mean((1, 2)))
    with pytest.raises(ValueError, match="cluster init"):
        init_centroids(x, 4, "bogus")


def test_max_gather_values_and_gradient_equal_plain_gather():
    B, M, N, k, C = 2, 11, 17, 4, 5
    src = torch.randn(B, M, C, dtype=torch.float64, requires_grad=True)
    idx = torch.stack([torch.stack([torch.randperm(M)[:k] for _ in range(N)]) for _ in range(B)])  # [B, N, k]
    g = torch.randn(B, N, C, dtype=torch.float64)
    out = max_gather(src, idx, max_elements=B * k * C * 3)  # chunked
    (out * g).sum().backward()
    src2 = src.detach().clone().requires_grad_(True)
    ref = src2[torch.arange(B)[:, None, None], idx].amax(2)  # [B, N, C]
    (ref * g).sum().backward()
    assert torch.equal(out, ref)
    torch.testing.assert_close(src.grad, src2.grad)


def _naive_lhg(conv: LHGConv, x: torch.Tensor) -> torch.Tensor:
    """Eq. 3's concatenation by a per-node loop, float64; brute-force k-NN and numpy FCM."""
    B, C, H, W = x.shape
    N = H * W
    y = pool_keys(x, conv.reduce).flatten(2).double()  # [B, C, M]
    M = y.shape[-1]
    xf = x.flatten(2).double()  # [B, C, N]
    rel = relative_position(C, H, W, conv.reduce).double()
    k, d = conv.k, conv.dilation
    out = torch.zeros(B, C, 3, N, dtype=torch.float64)
    for b in range(B):
        c0 = init_centroids(xf[b].T[None].float(), conv.cluster.num_clusters, "pool", (H, W))[0]
        cents, u = _fcm_numpy(xf[b].T.numpy(), c0.double().numpy(), 2.0, 1)
        xn, yn = F.normalize(xf[b], dim=0), F.normalize(y[b], dim=0)
        for i in range(N):
            dist = [float(((xn[:, i] - yn[:, j]) ** 2).sum() - rel[i, j]) for j in range(M)]
            nbrs = sorted(range(M), key=lambda j: dist[j])[: k * d : d]
            local = torch.stack([y[b, :, j] - xf[b, :, i] for j in nbrs]).max(0).values
            top = np.argsort(-(u[i] ** 2), kind="stable")[: conv.top_clusters]
            clus = torch.stack([torch.from_numpy(cents[p]) - xf[b, :, i] for p in top]).max(0).values
            out[b, :, 0, i], out[b, :, 1, i], out[b, :, 2, i] = xf[b, :, i], local, clus
    return out.reshape(B, 3 * C, H, W)


def test_lhg_conv_equals_per_node_loop():
    torch.manual_seed(1)
    conv = LHGConv(8, k=3, dilation=2, reduce=2, num_clusters=4, top_clusters=2).double().eval()
    x = torch.randn(2, 8, 4, 6, dtype=torch.float64)
    want = _naive_lhg(conv, x)
    got = conv.aggregate(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(conv(x), conv.nn(want))


@pytest.mark.parametrize("kernel,terms", [("both", 3), ("local", 2), ("higher", 2)])
@pytest.mark.parametrize("clustering", ["fcm", "kmeans", "density"])
def test_ablations_shapes_and_gradients(kernel, terms, clustering):
    conv = LHGConv(8, k=4, reduce=2, num_clusters=5, top_clusters=2, kernel=kernel, clustering=clustering)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    out = conv(x)
    assert out.shape == (2, terms * 8, 6, 6) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert (conv.cluster is None) == (kernel == "local")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kernel"):
        LHGConv(8, kernel="nope")
    with pytest.raises(ValueError, match="clustering"):
        LHGConv(8, clustering="nope")
    with pytest.raises(ValueError, match="fuzziness"):
        fuzzy_c_means(torch.randn(1, 3, 2), torch.randn(1, 2, 2), m=1.0)


def test_knn_clamps_k_and_dilation_for_few_keys():
    x = torch.randn(1, 10, 4)
    idx = dense_dilated_knn(x, x[:, :6], k=5, dilation=2)
    assert idx.shape == (1, 10, 5) and int(idx.max()) < 6
    assert math.isfinite(float(idx.float().mean()))


def test_knn_and_clusters_ignore_bf16_autocast():
    x = torch.randn(2, 8, 6, 10)
    conv = LHGConv(8, k=5, reduce=2, num_clusters=6, top_clusters=2).eval()
    keys, idx = conv.neighbours(x)
    c, top = conv.clusters(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        keys_bf, idx_bf = conv.neighbours(x)
        c_bf, top_bf = conv.clusters(x)
    assert torch.equal(idx, idx_bf) and torch.equal(top, top_bf)  # ranked in float32
    torch.testing.assert_close(c_bf, c)
