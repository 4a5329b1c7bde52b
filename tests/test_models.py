"""Semantic FPN: shapes, MC dropout (features once, BatchNorm frozen), checkpoints, torchvision backbone weights."""

from pathlib import Path

import pytest
import torch
from _data_helpers import single_thread, torchvision_state_dict  # noqa: F401 (single_thread: a fixture)

from fastral.models import (
    CheckpointError,
    SemanticFPN,
    build_model,
    load_checkpoint,
    load_torchvision_weights,
    mc_dropout,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"width": 8, "fpn_channels": 16, "head_channels": 8}
DATA = Path(__file__).parent / "data"


def tiny(num_classes=5, **kw):
    torch.manual_seed(0)
    return SemanticFPN(num_classes, **{**TINY, **kw})


def bn_stats(model):
    return [t.clone() for name, t in model.state_dict().items() if "running" in name]


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50"])
def test_logits_at_input_resolution(backbone):
    model = tiny(backbone=backbone)
    x = torch.randn(2, 3, 50, 70)  # not a multiple of 32
    assert model(x).shape == (2, 5, 50, 70)
    assert model.features(x).shape == (2, model.feature_channels, 13, 18)


def test_presets_and_argument_errors():
    assert build_model(11).config["backbone"] == "resnet18"
    assert build_model(11, "paper", width=8).config == {
        **build_model(11, "paper", width=8).config,
        "backbone": "resnet50",
    }
    with pytest.raises(ValueError, match="backbone"):
        SemanticFPN(3, backbone="resnet101")
    with pytest.raises(ValueError, match="preset"):
        build_model(3, "huge")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tiny()(torch.randn(1, 1, 32, 32))


def test_features_then_head_equals_forward():
    model = tiny().eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(model.head(model.features(x), x.shape[-2:]), model(x))
        assert model.head(model.features(x)).shape == (2, 5, 10, 14)  # stride-4 logits


def test_mc_samples_reuse_features_and_keep_batchnorm_frozen():
    model = tiny()
    model.train()
    x = torch.randn(2, 3, 40, 56)
    before = bn_stats(model)
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    samples = list(model.mc_samples(x, 4, generator=torch.Generator().manual_seed(1)))
    assert len(calls) == 1 and len(samples) == 4 and samples[0].shape == (2, 5, 40, 56)
    assert not torch.equal(samples[0], samples[1])  # dropout is active
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(model), strict=True))  # BN in eval mode
    assert model.training  # mode restored
    again = list(model.mc_samples(x, 4, generator=torch.Generator().manual_seed(1)))
    assert all(torch.equal(a, b) for a, b in zip(samples, again, strict=True))  # reproducible with a generator
    # The MC mean is close to the deterministic eval output (dropout rescales to keep the expectation).
    with torch.no_grad():
        mean = torch.stack(list(model.mc_samples(x, 100))).mean(0)
        assert (mean - model.eval()(x)).abs().mean() < 0.1 * model(x).abs().mean()


def test_mc_dropout_context():
    model = tiny()
    model.train()
    x = torch.randn(1, 3, 32, 32)
    before = bn_stats(model)
    with torch.no_grad(), mc_dropout(model):
        assert not model.backbone.training and model.dropout.training
        assert not torch.equal(model(x), model(x))
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(model), strict=True))
    assert model.training and model.backbone.training
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))  # deterministic outside


def test_train_dropout_switch():
    x = torch.randn(2, 3, 32, 32)
    for train_dropout, stochastic in ((True, True), (False, False)):
        model = tiny(train_dropout=train_dropout).train()
        with torch.no_grad():
            assert (not torch.equal(model(x), model(x))) == stochastic


def test_checkpoint_round_trip(tmp_path):
    model = tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).mean().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "ckpt" / "best.pt", model, optimizer, epoch=3, miou=0.5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt"]  # written via a temp file + rename
    loaded, extra = load_checkpoint(path)
    assert extra == {"epoch": 3, "miou": 0.5} and loaded.config == model.config
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))
    fresh_opt = torch.optim.SGD(loaded.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(path, tiny(), fresh_opt)
    assert fresh_opt.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_checkpoint_errors(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", tiny(num_classes=19))
    with pytest.raises(CheckpointError, match="has 19 classes, the model 11"):
        load_checkpoint(path, tiny(num_classes=11))
    model, _ = load_checkpoint(path, tiny(num_classes=11), skip_classifier=True)
    assert model.num_classes == 11
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatches \(backbone.conv1.weight: checkpoint \(8, 3, 7, 7\), model \(16, 3, 7, 7\)",
    ):
        load_checkpoint(path, tiny(num_classes=19, width=16))
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path, tiny(num_classes=19, backbone="resnet34"))
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a fastral segmentation checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_dropout_runs_as_a_module():
    """The head calls its nn.Dropout module: a module swapped in for it decides what dropout does."""
    model = tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    calls = []
    model.dropout.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        model(x)
        assert calls == [1]
        model.dropout = torch.nn.Dropout(1.0 - 1e-7).train()  # an always-on layer drops almost everything
        assert torch.allclose(model(x), model.classifier.bias.view(1, -1, 1, 1).expand(1, 5, 32, 32), atol=1e-4)


def test_checkpoint_of_fastral_0_1_still_loads():
    """A checkpoint written before the backbone took torchvision's parameter names gives the same logits."""
    model, extra = load_checkpoint(DATA / "semantic_fpn_v0.1_tiny.pt")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # the input saved with it
    with torch.no_grad():  # not bit-equal: convolutions round differently on another CPU (AVX2 vs AVX-512)
        torch.testing.assert_close(model.eval()(x), extra["logits"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_backbone_has_torchvision_parameter_names(depth):
    tv = torchvision_state_dict(depth)
    own = build_model(3, "paper", backbone=f"resnet{depth}", fpn_channels=8, head_channels=4).backbone.state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == {
        k: tuple(v.shape) for k, v in tv.items() if not k.startswith("fc.")
    }


def test_backbone_weights_load_a_torchvision_checkpoint(tmp_path):
    path = tmp_path / "resnet18-random.pth"
    torch.save(torchvision_state_dict(18), path)
    model = load_torchvision_weights(build_model(3, "compact", width=64), path)
    saved = torch.load(path, weights_only=True)
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, saved[name]), name
    with pytest.raises(CheckpointError, match=r"do not fit a ResNet-18 of width 32: .*shape mismatches.*--width 64"):
        load_torchvision_weights(build_model(3, "compact"), path)  # the compact preset's width is 32
    with pytest.raises(CheckpointError, match=r"ResNet-50 of width 64: \d+ shape mismatches.*missing \['layer1.0.down"):
        load_torchvision_weights(build_model(3, "paper"), path)
    torch.save({"model": torchvision_state_dict(18)}, tmp_path / "nested.pth")
    with pytest.raises(CheckpointError, match="must be a torchvision ResNet state dict"):
        load_torchvision_weights(model, tmp_path / "nested.pth")
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_torchvision_weights(model, tmp_path / "missing.pth")
