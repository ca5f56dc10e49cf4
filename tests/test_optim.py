"""The schedules of audiognn.tasks.optim give the learning rates of the formulas they replace."""

import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from audiognn.tasks.optim import (
    PaperAdamW,
    WarmupConstant,
    WarmupCosine,
    WarmupMultiStep,
    configure_schedule,
)

LR = 0.01


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)


def _warm(step, warm):
    return min(1.0, (step + 1) / warm) if warm else 1.0


def cosine_factor(step, warm, total):  # the LambdaLR formula these schedules replace
    if warm and step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _lrs(sched, opt, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("warm,total", [(0, 30), (1, 30), (5, 30), (20, 60), (7, 8)])
def test_warmup_cosine_matches_formula(warm, total):
    opt = _opt()
    got = _lrs(WarmupCosine(opt, warmup_steps=warm, total_steps=total), opt, total)
    want = [LR * cosine_factor(s, warm, total) for s in range(total)]
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("warm", [0, 1, 4])
def test_warmup_constant_matches_formula(warm):
    opt = _opt()
    got = _lrs(WarmupConstant(opt, warmup_steps=warm), opt, 12)
    torch.testing.assert_close(got, [LR * _warm(s, warm) for s in range(12)], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("warm", [0, 3, 8])
def test_warmup_multistep_steps_and_epochs(warm):
    """Warm-up per optimiser step times γ^(number of milestones <= epoch), the per-epoch scheduler stepped
    at each epoch's end (5 steps an epoch, milestones at epochs 1 and 3)."""
    opt = _opt()
    sched = WarmupMultiStep(opt, warmup_steps=warm, milestones=[3, 1], gamma=0.5)
    got, want, per_epoch = [], [], 5
    for epoch in range(5):
        for i in range(per_epoch):
            s = epoch * per_epoch + i
            got.append(opt.param_groups[0]["lr"])
            want.append(LR * _warm(s, warm) * 0.5 ** sum(epoch >= m for m in (1, 3)))
            opt.step()
            sched.step()
        sched.per_epoch.step()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_warmup_multistep_state_dict_round_trip():
    opt = _opt()
    a = WarmupMultiStep(opt, warmup_steps=4, milestones=[1], gamma=0.1)
    for _ in range(3):
        opt.step()
        a.step()
    a.per_epoch.step()
    state = a.state_dict()
    assert all(isinstance(v, (int, float, bool, list, dict, type(None))) for v in state.values())
    b = WarmupMultiStep(_opt(), warmup_steps=4, milestones=[1], gamma=0.1)
    b.load_state_dict(state)
    assert b.last_epoch == 3 and b.per_epoch.last_epoch == 1


def test_configure_schedule_passes_total_steps_and_intervals():
    trainer = SimpleNamespace(estimated_stepping_batches=40)
    opt = _opt()
    cfg = configure_schedule(opt, partial(WarmupCosine, warmup_steps=5), trainer)
    assert cfg["optimizer"] is opt and cfg["lr_scheduler"]["interval"] == "step"
    assert cfg["lr_scheduler"]["scheduler"]._schedulers[1].T_max == 35
    cfg = configure_schedule(_opt(), partial(WarmupCosine, warmup_steps=5, total_steps=10), trainer)
    assert cfg["lr_scheduler"]["scheduler"]._schedulers[1].T_max == 5  # a given total_steps is kept
    opts, configs = configure_schedule(_opt(), partial(WarmupMultiStep, milestones=[2]), trainer)
    assert [c["interval"] for c in configs] == ["step", "epoch"]
    cfg = configure_schedule(_opt(), partial(torch.optim.lr_scheduler.StepLR, step_size=2), trainer)
    assert cfg["lr_scheduler"]["interval"] == "epoch"  # Lightning's default for foreign schedulers
    assert configure_schedule(opt, None, trainer) == {"optimizer": opt}


def test_paper_adamw_defaults():
    opt = PaperAdamW([torch.nn.Parameter(torch.zeros(1))])
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 0.05)
