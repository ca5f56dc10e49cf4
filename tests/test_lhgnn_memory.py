"""LHGNN's memory-lean training path (audiognn/models/lean_ops.py, with the 1x1 convs as matmuls of
audiognn/graph/pointwise.py) and activation checkpointing: same outputs, gradients and BatchNorm statistics as
the plain module path (every conv an ``nn.Conv2d`` call, every activation saved), with far fewer saved
activations."""

import copy

import pytest
import torch
from torch import nn

from audiognn.graph import pointwise
from audiognn.graph.max_gather import gather_max_with_arg
from audiognn.models import lean_ops
from audiognn.models.lhgnn import LHGNN


def _plain(monkeypatch):
    monkeypatch.setattr(lean_ops, "use_lean", lambda *a: False)
    monkeypatch.setattr(lean_ops, "use_matmul", lambda *a: False)
    monkeypatch.setattr(pointwise, "use_matmul", lambda *a: False)


def _step(model, x, seed=3):
    torch.manual_seed(seed)  # same drop-path draws on both sides
    out = model(x)
    out.square().sum().backward()
    return out


def _assert_same(m1, m2, o1, o2):
    torch.testing.assert_close(o1, o2)
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, msg=n)
    for (n, b1), b2 in zip(m1.named_buffers(), m2.buffers(), strict=True):
        torch.testing.assert_close(b1, b2, msg=n)  # running statistics updated exactly once


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(kernel="local", stem="paper"), dict(kernel="higher", clustering="kmeans", drop_path=0.3)],
)
def test_lean_path_equals_plain_modules(monkeypatch, kw):
    torch.manual_seed(0)
    lean = LHGNN(5, size="tiny", **kw).train().double()
    plain = copy.deepcopy(lean)
    x = torch.randn(2, 96, 64, dtype=torch.float64)
    o1 = _step(lean, x)
    _plain(monkeypatch)
    o2 = _step(plain, x)
    _assert_same(lean, plain, o1, o2)


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
def test_checkpoint_blocks_equals_plain_step(drop_path):
    torch.manual_seed(0)
    ckpt = LHGNN(5, size="tiny", drop_path=drop_path, checkpoint_blocks=True).train().double()
    ref = copy.deepcopy(ckpt)
    ref.checkpoint_blocks = False
    x = torch.randn(2, 96, 64, dtype=torch.float64)
    _assert_same(ckpt, ref, _step(ckpt, x), _step(ref, x))


def _saved_bytes(model, x) -> int:
    """Bytes of the distinct tensors autograd saves in one forward (parameters excluded)."""
    seen = {p.untyped_storage().data_ptr() for p in model.parameters()}
    total = 0

    def pack(t):
        nonlocal total
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return total


def test_lean_path_and_checkpointing_save_less(monkeypatch):
    m = LHGNN(5, size="tiny").train()
    x = torch.randn(2, 256, 64)
    lean = _saved_bytes(m, x)
    m.checkpoint_blocks = True
    ckpt = _saved_bytes(m, x)
    m.checkpoint_blocks = False
    _plain(monkeypatch)
    plain = _saved_bytes(m, x)
    assert lean < 0.5 * plain, (lean, plain)  # LHGNN-s at 1024 x 128, batch 2: 362 MB vs 952 MB
    assert ckpt < 0.5 * lean, (ckpt, lean)


def test_lean_path_off_in_eval_no_grad_and_autocast():
    m = LHGNN(5, size="tiny").train()
    x = torch.randn(1, 64, 64)
    assert lean_ops.use_lean(x, m)
    with torch.no_grad():
        assert not lean_ops.use_lean(x, m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lean_ops.use_lean(x, m)
    assert not lean_ops.use_lean(x, m.eval())


def test_frozen_batchnorm_stats_restores_everything():
    bn = nn.BatchNorm2d(3)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with lean_ops.frozen_batchnorm_stats(bn):
        bn(torch.randn(4, 3, 5, 5) + 2.0)
    assert bn.momentum == 0.1
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("M,dtype", [(50, torch.uint8), (512, torch.int16), (40000, torch.int32)])
def test_gather_max_arg_in_smallest_int_type(M, dtype):
    src = torch.randn(1, M, 3)
    idx = torch.randint(0, M, (1, 7, 4))
    val, arg = gather_max_with_arg(src, idx)
    assert arg.dtype == dtype
    torch.testing.assert_close(src[0][arg[0].long(), torch.arange(3)], val[0])
    assert torch.equal(val, src[0][idx[0]].amax(1)[None])


def test_checkpoint_with_the_old_classifier_keys_loads():
    m = LHGNN(3, size="tiny").eval()
    sd = m.state_dict()
    sd["classifier.weight"] = sd.pop("head.1.weight")[:, :, None, None]  # the former 1x1 conv classifier
    sd["classifier.bias"] = sd.pop("head.1.bias")
    m2 = LHGNN(3, size="tiny").eval()
    m2.load_state_dict(sd)
    x = torch.randn(1, 64, 64)
    with torch.no_grad():
        assert torch.equal(m2(x), m(x))
