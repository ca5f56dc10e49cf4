"""1x1 convolutions as matmuls (audiognn/graph/pointwise.py): equal to nn.Conv2d, forward and backward."""

import pytest
import torch
from torch import nn

from audiognn.graph.pointwise import is_pointwise, pointwise_conv, pointwise_conv_backward, use_matmul


@pytest.mark.parametrize("cin,cout,groups,bias", [(12, 12, 4, True), (8, 32, 1, False), (6, 9, 3, True)])
def test_pointwise_conv_equals_conv2d_values_and_gradients(cin, cout, groups, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 1, groups=groups, bias=bias).double()
    x = torch.randn(3, cin, 5, 7, dtype=torch.float64, requires_grad=True)
    assert use_matmul(x, conv)
    g = torch.randn(3, cout, 5, 7, dtype=torch.float64)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    y1 = pointwise_conv(x, conv)
    grads1 = torch.autograd.grad(y1, params, g)
    y2 = conv(x)
    grads2 = torch.autograd.grad(y2, params, g)
    torch.testing.assert_close(y1, y2)
    for a, b in zip(grads1, grads2, strict=True):
        torch.testing.assert_close(a, b)
    # the hand-written backward (lean_ops' custom Functions) gives the same gradients
    g_in, g_w, g_b = pointwise_conv_backward(g, x.detach(), conv)
    torch.testing.assert_close(g_in, grads2[0])
    torch.testing.assert_close(g_w, grads2[1])
    assert (g_b is None) == (not bias)
    if bias:
        torch.testing.assert_close(g_b, grads2[2])


def test_other_convs_run_the_module_itself():
    x = torch.randn(2, 4, 6, 6)
    for conv in [nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1, stride=2), nn.Conv2d(4, 4, 1, dilation=2)]:
        assert not is_pointwise(conv) and not use_matmul(x, conv)
        torch.testing.assert_close(pointwise_conv(x, conv), conv(x))
    conv = nn.Conv2d(4, 8, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not use_matmul(x, conv)
        assert pointwise_conv(x, conv).dtype == torch.bfloat16
