"""Tests of al_annotator.models: registry, shapes, embeddings, MC dropout, checkpoints, inference."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from al_annotator.errors import AlAnnotatorError, InputError
from al_annotator.models import (
    CheckpointError,
    CheckpointNotFoundError,
    ModelConfig,
    SegmentationModel,
    create_model,
    default_model_name,
    iter_predict_proba,
    list_models,
    load_checkpoint,
    load_pretrained,
    mc_dropout_proba,
    predict_proba_slices,
    register_model,
    save_checkpoint,
)
from al_annotator.models.inference import blend_window, tile_grid

torch.set_num_threads(min(2, torch.get_num_threads()))

EMBEDDING_DIMS = {
    "hrnet_w18_small": 128,
    "hrnet_w18_small_v2": 144,
    "hrnet_w18": 144,
    "hrnet_w32": 256,
    "hrnet_w48": 384,
    "basic_unet": 256,
}


def test_registry_lists_required_models():
    assert set(EMBEDDING_DIMS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(EMBEDDING_DIMS))
def test_every_model_builds_and_keeps_input_size(name):
    torch.manual_seed(0)
    model = create_model(name, n_classes=3).eval()
    assert isinstance(model, SegmentationModel)
    assert (model.name, model.n_classes, model.config.name) == (name, 3, name)
    assert model.embedding_dim == EMBEDDING_DIMS[name]
    with torch.inference_mode():
        for h, w in [(64, 64), (72, 56)]:
            logits, emb = model.forward_with_embedding(torch.randn(2, 1, h, w))
            assert logits.shape == (2, 3, h, w)
            assert emb.shape == (2, EMBEDDING_DIMS[name])
            assert emb.dtype == torch.float32
            torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))  # documented: L2-normalised
            assert torch.isfinite(logits).all()


def test_hrnet_incre_features_option():
    model = create_model("hrnet_w18_small", n_classes=2, feature_location="incre").eval()
    assert model.embedding_dim == 1024
    assert model.config.kwargs == {"feature_location": "incre"}
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 40, 48)).shape == (1, 2, 40, 48)


def test_small_and_odd_inputs():
    model = create_model("hrnet_w18_small", n_classes=2).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 1, 20, 33)).shape == (1, 2, 20, 33)  # pad larger than the image


def test_basic_unet_hook_does_not_keep_the_bottleneck():
    model = create_model("basic_unet", n_classes=2, features=(4, 4, 8, 8, 16, 4)).eval()
    with torch.inference_mode():
        _, emb = model.forward_with_embedding(torch.randn(1, 1, 64, 64))
    assert emb.shape == (1, 16)
    assert model._bottleneck is None


def test_bad_arguments_name_the_value():
    with pytest.raises(InputError, match="no_such_net"):
        create_model("no_such_net", n_classes=2)
    with pytest.raises(InputError, match="wobble"):
        create_model("hrnet_w18_small", n_classes=2, wobble=1)
    with pytest.raises(InputError, match="feature_location"):
        create_model("hrnet_w18_small", n_classes=2, feature_location="deep")
    with pytest.raises(InputError, match="n_classes"):
        create_model("hrnet_w18_small", n_classes=0)
    with pytest.raises(InputError, match="dropout"):
        create_model("hrnet_w18_small", n_classes=2, dropout=1.5)
    model = create_model("hrnet_w18_small", n_classes=2)
    with pytest.raises(InputError, match=r"\(B, 1, H, W\)"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(InputError, match="already registered"):
        register_model("hrnet_w18_small", lambda cfg: None)


def test_default_model_name():
    assert default_model_name("cpu") == "hrnet_w18_small"
    assert default_model_name(torch.device("cpu")) == "hrnet_w18_small"
    assert default_model_name("cuda") == "hrnet_w48"
    assert default_model_name("cuda:1") == "hrnet_w48"


def test_config_round_trip():
    cfg = ModelConfig("basic_unet", 3, options=(("features", (4, 4, 8, 8, 16, 4)),))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="options must be"):
        ModelConfig("basic_unet", 3, options=(("features", object()),))


@pytest.mark.parametrize("name", ["hrnet_w18_small", "basic_unet"])
def test_mc_dropout_is_stochastic_and_eval_is_deterministic(name):
    torch.manual_seed(0)
    kw = {"features": (4, 4, 8, 8, 16, 4)} if name == "basic_unet" else {}
    model = create_model(name, n_classes=2, dropout=0.5, **kw).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        a, b = model(x), model(x)
        assert torch.equal(a, b)
        with model.mc_dropout():
            assert model.mc_dropout_active
            c, d = model(x), model(x)
        assert not model.mc_dropout_active
        assert not torch.equal(c, d)
        assert torch.equal(model(x), a)
        assert model.enable_mc_dropout() is False
        assert not torch.equal(model(x), model(x))
        model.enable_mc_dropout(False)
        samples, emb = model.forward_mc(x, 3)
    assert len(samples) == 3 and not torch.equal(samples[0], samples[1])
    assert emb.shape == (2, model.embedding_dim)


def test_mc_needs_dropout():
    model = create_model("hrnet_w18_small", n_classes=2, dropout=0.0).eval()
    with pytest.raises(InputError, match="dropout=0"):
        model.forward_mc(torch.zeros(1, 1, 32, 32), 2)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = create_model("hrnet_w18_small", n_classes=3, dropout=0.2, head_channels=64)
    # move the BN running statistics away from their init so that they must be saved too
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 64, 64))
    model.eval()
    x = torch.randn(2, 1, 72, 56)
    with torch.inference_mode():
        ref = model(x)
    path = save_checkpoint(model, tmp_path / "sub" / "ckpt.pt", round=np.int64(4), loss=np.float32(0.5), tag="r4", hist=np.arange(3))
    assert sorted(os.listdir(tmp_path / "sub")) == ["ckpt.pt"]  # no temporary file left behind
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert loaded.config == model.config
    assert meta["round"] == 4 and meta["tag"] == "r4" and abs(meta["loss"] - 0.5) < 1e-6
    assert torch.equal(meta["hist"], torch.arange(3))
    with torch.inference_mode():
        assert torch.equal(loaded(x), ref)
    # overwrite in place (atomic replace)
    save_checkpoint(loaded, path, round=5)
    assert load_checkpoint(path)[1]["round"] == 5


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not an al_annotator checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(AlAnnotatorError):
        load_checkpoint(tmp_path / "junk.pt")


def test_load_pretrained_adapts_rgb_timm_backbone(tmp_path):
    import timm

    torch.manual_seed(2)
    rgb = timm.create_model("hrnet_w18_small", pretrained=False)  # stands in for ImageNet weights
    path = tmp_path / "hrnet_w18_small_imagenet.pth"
    torch.save(rgb.state_dict(), path)
    model = create_model("hrnet_w18_small", n_classes=2)
    report = load_pretrained(model, path)
    assert report.prefix == "backbone."
    assert report.adapted == ("backbone.conv1.weight",)
    torch.testing.assert_close(model.backbone.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.backbone.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)
    assert "classifier.weight" in report.unexpected  # timm's ImageNet classifier
    assert "classifier.weight" in report.missing  # our head stays freshly initialised
    assert not report.mismatched
    with pytest.raises(CheckpointError, match="exactly"):
        load_pretrained(create_model("hrnet_w18_small", n_classes=2), path, strict=True)
    # two input channels: repeat + rescale
    two = create_model("hrnet_w18_small", n_classes=2, in_channels=2)
    load_pretrained(two, path)
    assert two.backbone.conv1.weight.shape[1] == 2
    torch.testing.assert_close(two.backbone.conv1.weight[:, 0], rgb.conv1.weight[:, 0] * 1.5)


def test_load_pretrained_from_checkpoint_and_state_dict(tmp_path):
    torch.manual_seed(3)
    src = create_model("hrnet_w18_small", n_classes=2).eval()
    save_checkpoint(src, tmp_path / "c.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "wrapped.pt")
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        ref = src(x)
    for name in ("c.pt", "wrapped.pt"):
        dst = create_model("hrnet_w18_small", n_classes=2).eval()
        report = load_pretrained(dst, tmp_path / name, strict=True)
        assert not report.missing and not report.unexpected and not report.adapted
        with torch.inference_mode():
            assert torch.equal(dst(x), ref)
    # a different number of classes: the classifier is reported as mismatched, the rest loads
    other = create_model("hrnet_w18_small", n_classes=5)
    report = load_pretrained(other, tmp_path / "c.pt")
    assert set(report.mismatched) == {"classifier.weight", "classifier.bias"}
    with pytest.raises(CheckpointNotFoundError, match="nope.pth"):
        load_pretrained(other, tmp_path / "nope.pth")
    torch.save({"foo.bar": torch.zeros(3)}, tmp_path / "alien.pt")
    with pytest.raises(CheckpointError, match="no key"):
        load_pretrained(other, tmp_path / "alien.pt")


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """labels: 0 = unlabelled (ignored), class i stored as i + 1."""
    return F.cross_entropy(logits, labels.long() - 1, ignore_index=-1)


@pytest.mark.parametrize("name", ["hrnet_w18_small", "basic_unet"])
def test_head_is_trainable_on_sparse_labels(name):
    torch.manual_seed(0)
    kw = {"features": (8, 8, 16, 16, 32, 8)} if name == "basic_unet" else {}
    model = create_model(name, n_classes=2, **kw).train()
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disk = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2).float()
    image = (disk + 0.1 * torch.randn(64, 64))[None, None].repeat(2, 1, 1, 1)
    labels = torch.zeros(2, 64, 64, dtype=torch.uint8)
    sparse = torch.rand(2, 64, 64) < 0.05  # 5 % of the pixels are labelled
    labels[sparse] = (disk.expand(2, 64, 64)[sparse] + 1).to(torch.uint8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = _masked_ce(model(image), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


def test_predict_proba_slices_shapes_and_mc():
    torch.manual_seed(0)
    model = create_model("hrnet_w18_small", n_classes=3, dropout=0.3)
    model.train()
    slices = np.random.default_rng(0).normal(size=(5, 72, 56)).astype(np.float32)
    probs, emb = predict_proba_slices(model, slices, batch_size=2)
    assert model.training  # mode restored
    assert probs.shape == (5, 3, 72, 56) and probs.dtype == np.float32
    assert emb.shape == (5, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    probs2, emb2 = predict_proba_slices(model, slices, batch_size=3)
    np.testing.assert_allclose(probs2, probs, atol=1e-5)  # eval mode: deterministic, batch-independent

    mean, emb3, mi = predict_proba_slices(model, slices, batch_size=2, mc_samples=4, seed=7)
    assert mean.shape == probs.shape and mi.shape == (5, 72, 56) and (mi >= 0).all() and mi.max() > 0
    np.testing.assert_allclose(emb3, emb, atol=1e-5)  # embedding does not depend on dropout
    samples = mc_dropout_proba(model, slices, T=4, batch_size=2, seed=7)
    assert samples.shape == (4, 5, 3, 72, 56)
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=1e-5)
    again = mc_dropout_proba(model, slices, T=4, batch_size=2, seed=7)
    np.testing.assert_array_equal(again, samples)
    from al_annotator.acquisition import bald

    np.testing.assert_allclose(bald(samples), mi, atol=1e-4)

    with pytest.raises(InputError, match="shape"):
        predict_proba_slices(model, slices[0])
    empty = predict_proba_slices(model, slices[:0])
    assert empty[0].shape == (0, 3, 72, 56) and empty[1].shape == (0, 128)


class _PixelModel(SegmentationModel):
    """A per-pixel model (1x1 conv): tiled and whole-slice predictions must agree."""

    pad_multiple = 1

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.classifier = torch.nn.Conv2d(1, config.n_classes, 1)
        self.embedding_dim = 1

    def _features(self, x):
        return x, x + 1.0


def test_tiled_prediction_blends_to_the_whole_slice_result():
    register_model("_pixel_test", _PixelModel, overwrite=True)
    torch.manual_seed(0)
    model = create_model("_pixel_test", n_classes=3, dropout=0.0)
    slices = np.random.default_rng(1).normal(size=(3, 100, 90)).astype(np.float32)
    whole, _ = predict_proba_slices(model, slices)
    tiled, emb = predict_proba_slices(model, slices, tile=48, batch_size=4)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    tiled_px, _ = predict_proba_slices(model, slices, tile=(64, 40), tile_overlap=8)
    np.testing.assert_allclose(tiled_px, whole, atol=1e-5)
    assert emb.shape == (3, 1)


def test_tile_grid_covers_and_blend_window_positive():
    for size, tile, ov in [(100, 64, 16), (64, 64, 16), (1000, 256, 64), (257, 256, 0)]:
        starts = tile_grid(size, tile, ov)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all() and starts[-1] + min(tile, size) == size
    w = blend_window((32, 40), (8, 10))
    assert w.shape == (32, 40) and (w > 0).all() and w.max() == 1.0


def test_iter_predict_proba_batches():
    model = create_model("hrnet_w18_small", n_classes=2)
    batches = list(iter_predict_proba(model, np.zeros((5, 32, 32), np.float32), batch_size=2))
    assert [b.start for b in batches] == [0, 2, 4]
    assert [b.probs.shape[0] for b in batches] == [2, 2, 1]
