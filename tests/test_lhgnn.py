"""LHGNN backbone (Singh et al.): parameter counts, shapes, gradients, compile, bf16."""

import pytest
import torch

from audiognn.models.lhgnn import LHGNN, count_trainable


def _meta(num_classes, **kw):
    with torch.device("meta"):
        return LHGNN(num_classes, **kw)


@pytest.mark.parametrize("num_classes,official", [(527, 31_476_127), (200, 31_140_952)])
def test_size_s_trainable_parameters(num_classes, official):
    n = count_trainable(_meta(num_classes))
    assert abs(n - official) / official < 0.01, n  # Table I: 31 M; official code's count
    # the paper text's channels [80, 160, 320, 640] give a clearly smaller model
    assert count_trainable(_meta(num_classes, channels=[80, 160, 320, 640])) < 0.85 * official
    # the paper text's four-conv stem is a small addition
    assert 0 < count_trainable(_meta(num_classes, stem="paper")) - n < 20_000


def test_size_s_structure():
    m = _meta(527)
    graphers = [b for b in m.modules() if b.__class__.__name__ == "Grapher"]
    assert len(graphers) == 12  # depths [2, 2, 6, 2]
    convs = [g.graph_conv for g in graphers]
    assert [c.reduce for c in convs] == [4, 4, 2, 2] + [1] * 8
    assert [c.dilation for c in convs] == [1, 1, 1, 1] + [2] * 8  # min(idx // 4 + 1, 2)
    assert {(c.k, c.top_clusters, c.cluster.num_clusters) for c in convs} == {(25, 10, 50)}
    assert m.pos_embed.shape == (1, 80, 32, 256)


@pytest.mark.parametrize("T,F", [(64, 64), (37, 40), (256, 128)])
def test_tiny_any_length(T, F):
    m = LHGNN(7, size="tiny").eval()
    x = torch.randn(2, T, F)
    with torch.no_grad():
        logits, emb = m(x), m.embed(x)
    assert logits.shape == (2, 7) and emb.shape == (2, 128)
    assert torch.isfinite(logits).all()
    with torch.no_grad():
        assert torch.equal(m(x), logits)  # deterministic inference ("pool" FCM init)


def test_every_trainable_parameter_gets_a_gradient():
    m = LHGNN(5, size="tiny", drop_path=0.0).train()
    x = torch.randn(3, 96, 64)
    m(x).square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, missing


def test_bad_input_raises():
    m = LHGNN(3, size="tiny")
    with pytest.raises(ValueError, match=r"\[B, T, F\]"):
        m(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="size"):
        LHGNN(3, size="xl")


def test_bf16_autocast_forward_and_backward():
    m = LHGNN(4, size="tiny").train()
    x = torch.randn(2, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out.shape == (2, 4) and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert m.pos_embed.grad is not None


def test_torch_compile_fullgraph_forward_backward():
    """Dynamo traces the whole model without a graph break (k-NN, FCM, gather-max included); AOT autograd
    runs the backward. Backend aot_eager: the inductor C++ build is exercised by the slow test below."""
    torch.manual_seed(0)
    m = LHGNN(4, size="tiny", drop_path=0.0).train()
    x = torch.randn(2, 64, 64)
    want = m(x)
    want.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    got = torch.compile(m, backend="aot_eager", fullgraph=True)(x)
    got.square().sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-3, atol=1e-4, msg=n)


@pytest.mark.slow
def test_torch_compile_inductor_tiny_matches_eager():
    m = LHGNN(4, size="tiny").eval()
    x = torch.randn(2, 64, 64)
    with torch.no_grad():
        want = m(x)
        got = torch.compile(m)(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# --- learning: LHGNN-tiny inside AudioClassifier on the synthetic multi-label "events" set -----------------
@pytest.mark.slow
def test_lhgnn_tiny_learns_synthetic_events(tmp_path):
    """val mAP >= 0.8 (chance ~0.2) after 12 epochs (240 steps of 16) on 320 clips of 1.28 s, one CPU thread."""
    from functools import partial

    import lightning as L

    from audiognn.features import FeatureConfig
    from audiognn.tasks.audio_classifier import AudioClassifier
    from audiognn.tasks.optim import PaperAdamW, WarmupCosine
    from datamodules.audio_shards import AudioShardDataModule
    from datamodules.prepare import prepare, synthetic_result

    root = tmp_path / "events"
    prepare(synthetic_result("events", 320, 80, 0, seed=0), root, FeatureConfig(target_frames=128), workers=1,
            progress=False)  # fmt: skip
    dm = AudioShardDataModule(str(root), batch_size=16, num_workers=0, mixup_prob=0.0, freq_mask=0, time_mask=0)
    assert dm.multilabel and dm.num_classes == 10
    L.seed_everything(0)
    model = AudioClassifier(
        partial(LHGNN, size="tiny", time_num=128, drop_path=0.0), dm.num_classes, True,
        optimizer=partial(PaperAdamW, lr=3e-3, weight_decay=0.01), scheduler=partial(WarmupCosine, warmup_steps=10),
    )  # fmt: skip
    trainer = L.Trainer(max_epochs=12, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, dm)
    val_map = trainer.validate(model, dm, verbose=False)[0]["val/mAP"]
    print(f"LHGNN-tiny synthetic events: val mAP {val_map:.3f}")
    assert val_map >= 0.8, f"LHGNN-tiny val mAP {val_map:.3f} < 0.8"
