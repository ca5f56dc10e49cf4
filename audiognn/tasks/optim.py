"""The optimisation convention of every task: an optimiser and a learning-rate schedule from the config.

A task receives ``optimizer: OptimizerCallable`` and ``scheduler: LRSchedulerCallable | None``
(``lightning.pytorch.cli``) and returns ``configure_schedule(optimizer, scheduler, self.trainer)`` from its
``configure_optimizers``. The schedules below are ``torch.optim.lr_scheduler`` schedulers (config:
``scheduler: {class_path: audiognn.tasks.optim.WarmupCosine, init_args: {warmup_steps: 20}}``):

* :class:`WarmupCosine`: linear warm-up over ``warmup_steps`` optimiser steps, then cosine to 0 at the last
  step (``SequentialLR`` of ``LinearLR`` and ``CosineAnnealingLR``); stepped every optimiser step.
* :class:`WarmupConstant`: linear warm-up, then constant (``LinearLR``); stepped every optimiser step.
* :class:`WarmupMultiStep`: linear warm-up in optimiser steps (``LinearLR``, stepped every step) times a
  decay by ``gamma`` at each *epoch* in ``milestones`` (``MultiStepLR``, stepped every epoch), as the
  official LHGNN code (its milestones are epochs, its warm-up steps).

How the total number of steps reaches a schedule: a scheduler class with a ``total_steps`` argument left at
``None`` gets ``trainer.estimated_stepping_batches`` from :func:`configure_schedule`. How the interval
reaches Lightning: a scheduler's ``interval`` attribute ("step" here; Lightning's default "epoch" for any
other scheduler); a scheduler with a ``per_epoch`` scheduler (:class:`WarmupMultiStep`) yields two
Lightning scheduler configs on the same optimiser, one stepped per step, one per epoch.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, SequentialLR


class PaperAdamW(torch.optim.AdamW):
    """AdamW with the settings of Singh et al., *LHGNN: Local-Higher Order Graph Neural Networks for Audio
    Classification and Tagging*, §III-A, as defaults: β = (0.9, 0.999), ε = 1e-8, weight decay 0.05.

    The learning rate is not stated in §III-A; 1e-3 is the official code's (its config, with Adam).

    Args:
        params: parameters to optimise.
        lr (float, optional): learning rate. (default: ``1e-3``)
        betas (tuple, optional): Adam's β1, β2. (default: ``(0.9, 0.999)``)
        eps (float, optional): ε. (default: ``1e-8``)
        weight_decay (float, optional): decoupled weight decay. (default: ``0.05``)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.05):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _warmup(optimizer: Optimizer, warmup_steps: int) -> LinearLR:
    """Factor ``(step + 1) / warmup_steps`` for ``step < warmup_steps``, then 1 (1 throughout for <= 1)."""
    w = max(1, int(warmup_steps))
    return LinearLR(optimizer, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1)


class WarmupCosine(SequentialLR):
    r"""Linear warm-up, then cosine annealing to 0 at the last optimiser step; stepped every step.

    .. math::
        \eta_s = \eta_0 \cdot \begin{cases} (s + 1) / W & s < W \\
        \tfrac12 \left(1 + \cos\left(\pi \, \frac{s - W}{\max(1, S - W)}\right)\right) & s \ge W \end{cases}

    Args:
        optimizer: the optimiser.
        warmup_steps (int, optional): W, warm-up steps. (default: ``0``)
        total_steps (int, optional): S, all optimiser steps of the run; ``None``: filled in by
            :func:`configure_schedule` from ``trainer.estimated_stepping_batches``. (default: ``None``)
    """

    interval = "step"

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0, total_steps: int | None = None):
        if total_steps is None:
            raise ValueError("WarmupCosine needs total_steps (configure_schedule passes the trainer's estimate)")
        w = max(0, int(warmup_steps))
        cosine = CosineAnnealingLR(optimizer, T_max=max(1, int(total_steps) - w), eta_min=0.0)
        if w == 0:
            super().__init__(optimizer, [cosine], milestones=[])
        else:
            super().__init__(optimizer, [_warmup(optimizer, w), cosine], milestones=[w])


class WarmupConstant(LinearLR):
    r"""Linear warm-up, then constant; stepped every optimiser step.

    .. math::
        \eta_s = \eta_0 \cdot \min(1, (s + 1) / W)

    Args:
        optimizer: the optimiser.
        warmup_steps (int, optional): W, warm-up steps (0: constant from the start). (default: ``0``)
    """

    interval = "step"

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0):
        w = max(1, int(warmup_steps))
        super().__init__(optimizer, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1)


class WarmupMultiStep(LinearLR):
    r"""Linear warm-up over optimiser steps times a step decay over epochs (the official LHGNN code's
    schedule); the warm-up is stepped every step, :attr:`per_epoch` (a ``MultiStepLR``) every epoch.

    .. math::
        \eta_{s, e} = \eta_0 \cdot \min(1, (s + 1) / W) \cdot \gamma^{|\{m \in M : e \ge m\}|}

    Args:
        optimizer: the optimiser.
        warmup_steps (int, optional): W, warm-up optimiser steps. (default: ``0``)
        milestones (list[int], optional): M, epochs at which the rate is multiplied by γ. (default: ``[]``)
        gamma (float, optional): γ. (default: ``0.5``)
    """

    interval = "step"

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0, milestones: list[int] | None = None,
                 gamma: float = 0.5):
        w = max(1, int(warmup_steps))
        super().__init__(optimizer, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1)
        # both schedulers are chainable (multiplicative), so stepping them at their own intervals composes
        self.per_epoch = MultiStepLR(optimizer, milestones=sorted(milestones or []), gamma=gamma)

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "per_epoch")}
        return {**state, "per_epoch": self.per_epoch.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        self.per_epoch.load_state_dict(state.pop("per_epoch"))
        self.__dict__.update(state)


def _accepts_total_steps(scheduler: Callable) -> bool:
    """Whether ``scheduler`` (a class or a ``functools.partial`` of one, as jsonargparse gives) takes a
    ``total_steps`` argument that is not set yet."""
    target, given = scheduler, {}
    while isinstance(target, functools.partial):
        given = {**target.keywords, **given}
        target = next((a for a in target.args if inspect.isclass(a)), target.func)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "total_steps" in params and given.get("total_steps") is None


def lightning_scheduler_configs(scheduler: LRScheduler) -> list[dict]:
    """Lightning's scheduler configs of ``scheduler``: its own interval ("epoch" unless it declares one),
    plus its ``per_epoch`` companion when it has one."""
    configs = [{"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}]
    if isinstance(getattr(scheduler, "per_epoch", None), LRScheduler):
        configs.append({"scheduler": scheduler.per_epoch, "interval": "epoch"})
    return configs


def configure_schedule(optimizer: Optimizer, scheduler: Callable | None, trainer) -> dict | tuple:
    """What a task's ``configure_optimizers`` returns for ``optimizer`` and a scheduler callable (or None).

    A scheduler taking ``total_steps`` (left ``None``) gets ``trainer.estimated_stepping_batches``.
    """
    if scheduler is None:
        return {"optimizer": optimizer}
    kwargs = {}
    if _accepts_total_steps(scheduler):
        kwargs["total_steps"] = max(1, int(trainer.estimated_stepping_batches))
    configs = lightning_scheduler_configs(scheduler(optimizer, **kwargs))
    if len(configs) == 1:
        return {"optimizer": optimizer, "lr_scheduler": configs[0]}
    return [optimizer], configs
