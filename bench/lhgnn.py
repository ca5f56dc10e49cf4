"""Benchmark: LHGNN train-step time and peak memory, ours vs an official-style reference, at the paper's input.

    python bench/lhgnn.py                                # CPU: LHGNN-s at 1024 x 128, batch 2 and 4 (~6 min)
    python bench/lhgnn.py --device cuda --model-batch 8 16 --steps 10   # GPU: bf16 autocast + torch.compile

Reference (measured in the same run, same weights, same k-NN indices): LHGNN written the way the official
code does it (Singh et al., LHGNN, eq. 3) — max-relative aggregation by gathering both x_j and x_i into
[B, C, N, k] tensors and taking max(x_j - x_i); Fuzzy C-Means centroids (eq. 2) by broadcasting
``weights * x.unsqueeze(-1)`` into [B, N, C, P]; the cluster term likewise by two [B, C, N, K] gathers; the
Grapher and ConvFFN as plain module chains that keep every activation for autograd. Ours: one gather-max
(arg-max kept), eq. 2 as an einsum, and the memory-lean training path (audiognn/models/lean_ops.py: BN,
GELU, depth-wise conv and the gathered maxima recomputed in the backward). Both use eq. 1 memberships and
the deterministic "pool" initialisation, so the bench asserts equal outputs and gradients before timing.

Rows: one Grapher at the stage-1 size of a 128 x 1024 input (80 channels, 32 x 256 = 8192 nodes, 512
pooled keys), then whole models at ``--model-frames`` x ``--mels`` (default 1024 x 128, the paper's 10 s
clips, §III-A) for every ``--model-batch``. Each measurement runs in its own subprocess, reference and ours
alternating, ``--threads`` intra-op threads (default 2). A train step = forward + backward (no optimiser);
time per step over ``--steps`` steps after one warm-up step. Peak memory:
- CPU: two subprocesses per row. The timed one runs with glibc's default allocator (what a user gets); the
  memory one takes the peak resident set size during one warm-up and one train step (``VmHWM``, reset through
  /proc/self/clear_refs just before the warm-up) minus the RSS at that moment, with glibc's
  ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensor memory goes back to the OS at once and RSS follows the live
  tensors, as ``torch.cuda.max_memory_allocated`` does on a GPU. (With the default allocator the peak also counts
  freed memory the allocator keeps for reuse, a few hundred MB whatever the model: printed as "dflt MB". Under the
  64 KiB threshold every large allocation page-faults afresh, which inflates step times about 3x: times are never
  taken that way.)
- CUDA: ``torch.cuda.max_memory_allocated`` during the steps minus the memory allocated before; the model
  runs under ``torch.autocast("cuda", torch.bfloat16)`` and ``torch.compile`` (``--no-compile`` for eager);
  there the lean custom Functions step aside (lean_ops.use_lean) and AOT autograd chooses what to recompute.
Timings on a shared machine are noisy; compare the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiognn.graph.cluster_init import init_centroids, squared_distance  # noqa: E402
from audiognn.graph.knn import dense_dilated_knn, pool_keys  # noqa: E402
from audiognn.graph.lhg_conv import LHGConv  # noqa: E402
from audiognn.models.lhgnn import LHGNN, ConvFFN, Grapher  # noqa: E402


# --- the reference: official-style LHG conv ---------------------------------------------------------------
def batched_index_select(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """ViG's gather: x [B, C, M, 1], idx [B, N, k] -> [B, C, N, k]."""
    B, C, M = x.shape[:3]
    _, N, k = idx.shape
    flat = (idx + torch.arange(B, device=idx.device).view(-1, 1, 1) * M).reshape(-1)
    feat = x.transpose(2, 1).contiguous().view(B * M, -1)[flat, :]
    return feat.view(B, N, k, C).permute(0, 3, 1, 2).contiguous()


class ReferenceLHGConv(nn.Module):
    """Same parameters as ``conv`` (shared), official-style computation (kernel "both", FCM)."""

    def __init__(self, conv: LHGConv):
        super().__init__()
        if conv.kernel != "both" or conv.cluster.__class__.__name__ != "FuzzyCMeans":
            raise ValueError("reference block implements kernel='both', clustering='fcm' only")
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, fcm = self.conv, self.conv.cluster
        B, C, H, W = x.shape
        N = H * W
        y = pool_keys(x, c.reduce)
        xf, yf = x.reshape(B, C, -1, 1), y.reshape(B, C, -1, 1)
        rel = c.rel_pos(H, W, x.device) if c.rel_pos is not None else None
        nn_idx = dense_dilated_knn(xf[..., 0].transpose(1, 2), yf[..., 0].transpose(1, 2), c.k, c.dilation, rel,
                                   max_elements=1 << 62)  # fmt: skip  # the official code does not chunk below 10^4
        k = nn_idx.shape[-1]
        center = torch.arange(N, device=x.device).view(1, N, 1).expand(B, N, k)
        x_i = batched_index_select(xf, center)  # [B, C, N, k]
        x_j = batched_index_select(yf, nn_idx)  # [B, C, N, k]
        local = torch.max(x_j - x_i, -1, keepdim=True).values  # [B, C, N, 1]
        with torch.no_grad():
            nodes = x.detach().flatten(2).transpose(1, 2).float()  # [B, N, C]
            c0 = init_centroids(nodes, fcm.num_clusters, fcm.init, (H, W))
            u = torch.softmax(-torch.log(squared_distance(nodes, c0).clamp_min(1e-12)) / (fcm.m - 1.0), -1)
            w = u.pow(fcm.m)  # [B, N, P]
            cent = (w.unsqueeze(2) * nodes.unsqueeze(-1)).sum(1) / w.sum(1).clamp_min(1e-12).unsqueeze(1)  # [B, C, P]
            top = w.topk(min(c.top_clusters, w.shape[-1]), dim=-1).indices  # [B, N, K]
        cent = cent.to(x.dtype).unsqueeze(-1)  # [B, C, P, 1]
        kc = top.shape[-1]
        x_jc = batched_index_select(cent, top)  # [B, C, N, K]
        x_ic = batched_index_select(xf, center[..., :1].expand(B, N, kc))  # [B, C, N, K]
        clus = torch.max(x_jc - x_ic, -1, keepdim=True).values
        h = torch.cat([xf.unsqueeze(2), local.unsqueeze(2), clus.unsqueeze(2)], dim=2).reshape(B, 3 * C, H, W)
        return c.nn(h)


class ReferenceGrapher(nn.Module):
    """Grapher with every activation kept for autograd, as the official code: fc1 -> reference conv -> fc2."""

    def __init__(self, grapher: Grapher):
        super().__init__()
        self.g = grapher
        self.conv = ReferenceLHGConv(grapher.graph_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.g
        return x + g.drop_path(g.fc2(self.conv(g.fc1(x))))


class ReferenceFFN(nn.Module):
    """ConvFFN as plain modules (every activation of the 4C expansion kept for autograd)."""

    def __init__(self, ffn: ConvFFN):
        super().__init__()
        self.f = ffn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.f
        return x + f.drop_path(f.fc2(f.dw(f.act(f.fc1(x)))))


def to_reference(model: nn.Module) -> nn.Module:
    if isinstance(model, Grapher):
        return ReferenceGrapher(model)
    for stage in model.stages:
        for i, block in enumerate(stage):
            if isinstance(block, Grapher):
                stage[i] = ReferenceGrapher(block)
            elif isinstance(block, ConvFFN):
                stage[i] = ReferenceFFN(block)
    return model


# --- what is measured -------------------------------------------------------------------------------------
STAGE1 = dict(channels=80, k=25, dilation=1, reduce=4, num_clusters=50, top_clusters=10)  # size s, stage 1


def build(kind: str, variant: str, batch: int, frames: int, mels: int, device: str):
    torch.manual_seed(0)
    if kind == "block":  # one Grapher (fc1 -> LHG conv -> fc2 + residual) at stage-1 size of a 1024 x 128 input
        ch = STAGE1["channels"]
        model = Grapher(ch, **{k: v for k, v in STAGE1.items() if k != "channels"})
        x = torch.randn(batch, ch, mels // 4, frames // 4, requires_grad=True)
    else:
        model = LHGNN(527, size=kind)
        x = torch.randn(batch, frames, mels)
    if variant == "reference":
        model = to_reference(model)
    model = model.to(device).train()
    x = x.detach().to(device).requires_grad_(kind == "block")
    return model, x


def step(model: nn.Module, x: torch.Tensor, cuda: bool = False) -> None:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        out = model(x)
    out.float().square().mean().backward()
    model.zero_grad(set_to_none=True)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> float:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0: write 5 to clear_refs); return RSS now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not permitted: fall back to the process-lifetime peak (a weaker baseline)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return _status_mb("VmRSS")


def worker(kind: str, variant: str, batch: int, frames: int, mels: int, steps: int, device: str,
           compile_model: bool = True) -> dict:  # fmt: skip
    model, x = build(kind, variant, batch, frames, mels, device)
    cuda = device.startswith("cuda")
    if cuda and compile_model:
        model = torch.compile(model)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        gc.collect()
        base = _reset_peak_rss()
    step(model, x, cuda)  # warm-up (also builds the relative-position cache; compiles on CUDA)
    if cuda:
        torch.cuda.synchronize()
    t, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step(model, x, cuda)
    if cuda:
        torch.cuda.synchronize()
    dt, cpu = time.perf_counter() - t, time.process_time() - cpu0
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else _status_mb("VmHWM") - base  # MB
    return {"clips_per_s": batch * steps / dt, "peak_mb": peak, "s_per_step": dt / steps, "cpu_s_per_step": cpu / steps}


def _run_worker(args, kind: str, variant: str, batch: int, steps: int, env: dict) -> dict:
    frames = args.frames if kind == "block" else args.model_frames
    cmd = [sys.executable, __file__, "--worker", kind, variant, str(batch), "--frames", str(frames),
           "--mels", str(args.mels), "--steps", str(steps), "--device", args.device,
           "--threads", str(args.threads)] + (["--no-compile"] if args.no_compile else [])  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"bench worker {kind}/{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(args, kind: str, variant: str, batch: int) -> dict:
    """Times (and on CUDA memory) from one subprocess with the default allocator; on the CPU the live-tensor
    peak from a second one with the 64 KiB mmap threshold (see the module docstring)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    out = _run_worker(args, kind, variant, batch, args.steps, env)
    if not args.device.startswith("cuda"):
        out["default_peak_mb"] = out["peak_mb"]
        out["peak_mb"] = _run_worker(args, kind, variant, batch, 1, {**env, "MALLOC_MMAP_THRESHOLD_": "65536"})["peak_mb"]
    return out


def _close(a: torch.Tensor, b: torch.Tensor, name: str, floor: float = 0.0) -> None:
    """Equal up to float32 summation-order noise: |a - b| <= 1e-3 * max(max|b|, floor) elementwise.

    ``floor`` guards gradients that are zero in exact arithmetic (a conv bias before a training-mode BN)."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-3 * max(float(b.abs().max()), floor) + 1e-12, msg=name)


def check_equal(args) -> None:
    """Ours and the reference give the same outputs and gradients (same weights, same inputs)."""
    for kind, batch in (("block", 1), ("tiny", 2)):
        frames = args.frames if kind == "block" else args.model_frames
        ours, x = build(kind, "ours", batch, frames, args.mels, "cpu")
        ref, _ = build(kind, "ours", batch, frames, args.mels, "cpu")
        ref.load_state_dict(ours.state_dict())
        ref = to_reference(ref).train()
        x1, x2 = x.detach().clone().requires_grad_(True), x.detach().clone().requires_grad_(True)
        torch.manual_seed(1)
        o1 = ours(x1)
        torch.manual_seed(1)  # same drop-path draws
        o2 = ref(x2)
        torch.testing.assert_close(o1, o2, rtol=1e-3, atol=1e-4)
        o1.square().mean().backward()
        o2.square().mean().backward()
        _close(x1.grad, x2.grad, "input")
        floor = 1e-2 * max(float(p.grad.abs().max()) for p in ref.parameters())
        for (n, p1), p2 in zip(ours.named_parameters(), ref.parameters(), strict=True):
            _close(p1.grad, p2.grad, n, floor)
    print("check: ours == reference (outputs, input and parameter gradients) on the stage-1 block and LHGNN-tiny")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=3, metavar=("KIND", "VARIANT", "BATCH"), help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, default=1024, help="input frames T of the graph block (paper: 1024)")
    p.add_argument("--model-frames", type=int, default=1024, help="input frames T for whole models (paper: 1024)")
    p.add_argument("--mels", type=int, default=128, help="mel bins F (paper: 128)")
    p.add_argument("--steps", type=int, default=2, help="timed train steps per measurement (after 1 warm-up)")
    p.add_argument("--block-batch", type=int, default=4, help="batch for the stage-1 graph block (0: no block row)")
    p.add_argument("--model-batch", type=int, nargs="+", default=[2, 4], help="batches for whole models")
    p.add_argument("--models", nargs="*", default=["s"], choices=["tiny", "s"])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every measurement (default 2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-compile", action="store_true", help="CUDA: eager bf16 instead of torch.compile")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        kind, variant, batch = args.worker
        res = worker(kind, variant, int(batch), args.frames, args.mels, args.steps, args.device, not args.no_compile)
        print(json.dumps(res))
        return
    check_equal(args)
    cuda = args.device.startswith("cuda")
    mem = "CUDA max_memory_allocated" if cuda else "peak RSS delta (subprocess, 64 KiB mmap threshold)"
    mode = (" bf16 autocast" + ("" if args.no_compile else " + torch.compile")) if cuda else " float32 eager"
    print(f"device {args.device}{mode}, {args.threads} threads; input {args.mels} mels x {args.frames} frames for "
          f"the graph block, x {args.model_frames} frames for whole models (527 classes); {args.steps} timed "
          f"train steps (fwd+bwd) after 1 warm-up; memory = {mem}")  # fmt: skip
    rows = ([("block", args.block_batch)] if args.block_batch else []) + [
        (m, b) for m in args.models for b in args.model_batch
    ]
    dflt = "" if cuda else f"{'ref dflt MB':>12}{'ours dflt MB':>13}{'ratio':>6}"
    print(f"{'what':<28}{'batch':>6}{'ref s/step':>11}{'ours s/step':>12}{'speed-up':>9}{'CPU-time':>9}"
          f"{'ours clips/s':>13}{'ref MB':>8}{'ours MB':>8}{'ratio':>6}{dflt}")  # fmt: skip
    for kind, batch in rows:
        ref = measure(args, kind, "reference", batch)  # alternating: reference, then ours, row by row
        ours = measure(args, kind, "ours", batch)
        sp, mr = ref["s_per_step"] / ours["s_per_step"], ours["peak_mb"] / max(ref["peak_mb"], 1e-9)
        sp_cpu = ref["cpu_s_per_step"] / ours["cpu_s_per_step"]
        name = "Grapher, stage-1 size of s" if kind == "block" else f"LHGNN-{kind} train step"
        print(f"{name:<28}{batch:>6}{ref['s_per_step']:>11.2f}{ours['s_per_step']:>12.2f}{sp:>8.2f}x{sp_cpu:>8.2f}x"
              f"{ours['clips_per_s']:>13.2f}{ref['peak_mb']:>8.0f}{ours['peak_mb']:>8.0f}{mr:>6.2f}"
              + ("" if cuda else f"{ref['default_peak_mb']:>12.0f}{ours['default_peak_mb']:>13.0f}"
                 f"{ours['default_peak_mb'] / max(ref['default_peak_mb'], 1e-9):>6.2f}"))  # fmt: skip
    print("ratio = ours / reference peak memory (MB: live tensors; dflt MB: the default allocator's peak, freed memory "
          "it keeps included); speed-up = reference / ours wall time per step, default allocator; CPU-time = the "
          "same with process CPU time (less sensitive to other load on a shared machine)")


if __name__ == "__main__":
    main()
