"""One contract for every audio backbone (the AudioBackbone interface): shapes, embedding size, gradients,
eval-mode determinism."""

from functools import partial

import pytest
import torch

from audiognn.models.base import AudioBackbone
from audiognn.models.cnn import CNN
from audiognn.models.genre_gnn import CONVS, GenreGNN
from audiognn.models.lhgnn import LHGNN
from audiognn.models.rnn import RNN

C, B, T, F = 5, 3, 64, 32

BACKBONES = {
    "lhgnn-tiny": partial(LHGNN, size="tiny", freq_num=F, time_num=T),
    "lhgnn-xs": partial(LHGNN, size="xs", freq_num=F, time_num=T),
    "lhgnn-freq-bands": partial(LHGNN, size="tiny", freq_num=F, time_num=T, freq_bands=2),
    "cnn": partial(CNN, channels=(4, 8), dropout=0.2),
    "cnn-freq-bands": partial(CNN, channels=(4, 8), dropout=0.2, freq_bands=4),
    "cnn-time-pool": partial(CNN, channels=(4, 8), dropout=0.2, freq_bands=2, time_pool=2),
    "rnn-lstm": partial(RNN, cell="lstm", n_mels=F, n_mfcc=8, hidden=8),
    "rnn-gru-logmel": partial(RNN, cell="gru", bidirectional=False, n_mels=F, n_mfcc=None, hidden=8),
    "rnn-conv-frames": partial(RNN, n_mels=F, hidden=8, conv_channels=[4, 8]),
    "rnn-time-pool": partial(RNN, n_mels=F, n_mfcc=8, hidden=8, time_pool=3),
    **{f"genre-gnn-{c}": partial(GenreGNN, n_mels=F, segment_frames=8, k=3, conv=c, hidden=16, heads=2)
       for c in CONVS},
    "genre-gnn-logmel": partial(GenreGNN, n_mels=F, segment_frames=8, node_features="logmel", hidden=16),
}


@pytest.fixture(params=sorted(BACKBONES))
def backbone(request) -> AudioBackbone:
    torch.manual_seed(0)
    return BACKBONES[request.param](C)


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, F, generator=torch.Generator().manual_seed(seed))


def test_backbone_contract_shapes(backbone):
    assert isinstance(backbone, AudioBackbone)
    assert isinstance(backbone.embed_dim, int) and isinstance(backbone.head, torch.nn.Module)
    backbone.eval()
    with torch.no_grad():
        z, logits = backbone.embed(_x()), backbone(_x())
    assert z.shape == (B, backbone.embed_dim)
    assert logits.shape == (B, C)
    torch.testing.assert_close(backbone.head(z), logits)  # forward = head(embed(x))


def test_backbone_backward_reaches_every_parameter(backbone):
    backbone.train()
    backbone(_x()).square().mean().backward()
    missing = [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"


def test_backbone_eval_is_deterministic(backbone):
    backbone.eval()
    with torch.no_grad():
        a, b = backbone(_x()), backbone(_x())
    assert torch.equal(a, b)


def test_cnn_freq_bands_keep_the_bands_apart():
    """``freq_bands``: the mean and max over time of each band's average, per channel, against a loop."""
    torch.manual_seed(0)
    m = CNN(C, channels=(4, 8), freq_bands=2).eval()
    x = _x()
    h = m.features(x.unsqueeze(1))  # [B, 8, T/4, F/4 = 8]
    want = []
    for b in range(B):
        bands = [h[b, :, :, 4 * i:4 * i + 4].mean(-1) for i in range(2)]  # [8, T'] each
        mean = torch.stack([band.mean(-1) for band in bands], -1)  # [8, 2]
        mx = torch.stack([band.amax(-1) for band in bands], -1)
        want.append(torch.cat([mean, mx]).flatten())
    torch.testing.assert_close(m.embed(x), torch.stack(want))
    assert m.embed_dim == 2 * 8 * 2
    with pytest.raises(ValueError, match="freq_bands"):
        CNN(C, freq_bands=0)


def test_lhgnn_freq_bands_keep_the_bands_apart():
    """LHGNN ``freq_bands``: the neck reads the mean and max over time of each band of the stage-4 map."""
    torch.manual_seed(0)
    m = LHGNN(C, size="tiny", freq_num=128, time_num=T, freq_bands=2).eval()
    maps = []
    m.stages[-1][-1].register_forward_hook(lambda mod, inp, out: maps.append(out))  # the last block
    x = torch.randn(B, T, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = m.embed(x)
    h = maps[0]  # [B, 64, 128/32 = 4 rows, T/32 = 2]: band i is the mean of rows 2i and 2i + 1
    assert h.shape == (B, 64, 4, 2)
    want = []
    for b in range(B):
        bands = [h[b, :, 2 * i:2 * i + 2].mean(1) for i in range(2)]  # [64, T'] each
        mean = torch.stack([band.mean(-1) for band in bands], -1)  # [64, 2]
        mx = torch.stack([band.amax(-1) for band in bands], -1)
        want.append(torch.cat([mean, mx]).flatten())
    with torch.no_grad():
        torch.testing.assert_close(z, m.neck(torch.stack(want)[..., None, None]).flatten(1))
    assert m.neck[0].in_channels == 2 * 64 * 2
    with pytest.raises(ValueError, match="freq_bands"):
        LHGNN(C, size="tiny", freq_bands=0)


def test_cnn_time_pool_averages_frame_pairs_first():
    """``time_pool=2``: the blocks see the mean of each pair of frames (an odd last frame alone)."""
    torch.manual_seed(0)
    m = CNN(C, channels=(4, 8), time_pool=2).eval()
    x = torch.randn(B, T + 1, F, generator=torch.Generator().manual_seed(2))
    pairs = torch.cat([x[:, :T].reshape(B, T // 2, 2, F).mean(2), x[:, T:]], dim=1)  # [B, T/2 + 1, F]
    with torch.no_grad():
        h = m.features(pairs.unsqueeze(1))
        want = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        torch.testing.assert_close(m.embed(x), want)
    with pytest.raises(ValueError, match="time_pool"):
        CNN(C, time_pool=0)


def test_audio_classifier_load_from_checkpoint_alone(tmp_path):
    """A checkpoint rebuilds its backbone from the hyper-parameters: no datamodule, no config, no callable."""
    import lightning as L
    from torch.utils.data import DataLoader

    from audiognn.tasks.audio_classifier import AudioClassifier
    from audiognn.tasks.optim import WarmupCosine

    torch.manual_seed(0)
    clips = [{"x": torch.randn(T, F), "y": torch.eye(C)[i % C], "key": str(i)} for i in range(8)]
    task = AudioClassifier(BACKBONES["cnn"], num_classes=C, data_info={"classes": list("abcde")},
                           scheduler=partial(WarmupCosine, warmup_steps=1))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, DataLoader(clips, batch_size=4))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = AudioClassifier.load_from_checkpoint(path, map_location="cpu").eval()
    assert isinstance(loaded.backbone, CNN) and loaded.class_names == list("abcde")
    with torch.no_grad():
        torch.testing.assert_close(loaded(_x()), task.eval()(_x()))


def test_crop_evaluation_leaves_out_crops_of_padding_only():
    """eval_logits with ``valid``: the mean over the crops that start inside the audio (never fewer than one)."""
    from audiognn.tasks.audio_classifier import AudioClassifier

    task = AudioClassifier(BACKBONES["cnn"], num_classes=C, eval_crop_frames=8).eval()
    x = torch.randn(3, 32, F)  # 4 crops of 8 frames
    valid = torch.tensor([32, 9, 0])  # all 4 crops; crops 0-1 (crop 1 starts at frame 8 < 9); crop 0 only
    with torch.no_grad():
        crops = task(x.reshape(12, 8, F)).view(3, 4, C)
        out = task.eval_logits(x, valid)
        torch.testing.assert_close(out[0], crops[0].mean(0))
        torch.testing.assert_close(out[1], crops[1, :2].mean(0))
        torch.testing.assert_close(out[2], crops[2, 0])
        torch.testing.assert_close(task.eval_logits(x), crops.mean(1))  # no valid: every crop
