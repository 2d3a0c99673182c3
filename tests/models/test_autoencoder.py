"""Latent autoencoders (autoencoder_kl, vqvae): shapes, scale factor, save/load, 3D, config checks."""

from __future__ import annotations

import pytest
import torch

from unicxr.models import load_model
from unicxr.models.autoencoder import (
    AutoencoderConfig,
    AutoencoderKLModel,
    VQVAEModel,
    build_autoencoder,
    load_autoencoder,
)
from unicxr.utils.errors import UnicxrError

TINY = {"channels": [8, 16, 16], "norm_num_groups": 8, "latent_channels": 3, "num_embeddings": 32}


def _tiny(kind: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_autoencoder({"kind": kind, **TINY, **kw})


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_shapes_and_latent_shape(kind):
    m = _tiny(kind).eval()
    assert isinstance(m, AutoencoderKLModel if kind == "kl" else VQVAEModel)
    x = torch.rand(2, 1, 32, 32)
    z = m.encode(x)
    assert z.shape == (2, 3, 8, 8) == (2, *m.latent_shape(32))
    assert m.decode(z).shape == x.shape
    assert m.latent_shape((32, 64)) == (3, 8, 16)
    out = m.train()(x)
    assert out[0].shape == x.shape
    with pytest.raises(ValueError):
        m.encode(torch.rand(2, 1, 30, 30))  # not divisible by f=4
    f8 = _tiny(kind, channels=[8, 8, 16, 16])
    assert f8.downsample_factor == 8 and f8.latent_shape(64) == (3, 8, 8)


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_scale_factor_multiplies_encode_and_divides_decode(kind):
    m = _tiny(kind).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        z1, x1 = m.encode(x), m.decode(m.encode(x))
        m.set_scale_factor(2.5)
        z2 = m.encode(x)
        torch.testing.assert_close(z2, 2.5 * z1)
        torch.testing.assert_close(m.decode(z2), x1)
        torch.testing.assert_close(m.encode_unscaled(x), z1)
    assert m.config.scale_factor == 2.5
    with pytest.raises(ValueError):
        m.set_scale_factor(0.0)


def test_kl_posterior_and_sampling():
    m = _tiny("kl").eval()
    x = torch.rand(2, 1, 16, 16)
    mu, logvar = m.posterior(x)
    torch.testing.assert_close(m.encode(x), mu)
    g = torch.Generator().manual_seed(1)
    s1 = m.encode(x, sample=True, generator=g)
    s2 = m.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s1, s2) and not torch.equal(s1, mu)


def test_vq_indices_and_codebook_start():
    m = _tiny("vq")
    x = torch.rand(8, 1, 32, 32)
    assert int(m.codebook_ready) == 0
    m.train()(x)  # first training forward initialises the codebook from encoder outputs
    assert int(m.codebook_ready) == 1
    m.eval()
    idx = m.encode_indices(x)
    assert idx.shape == (8, 8, 8) and idx.dtype == torch.int64
    assert idx.unique().numel() > 4  # no collapse onto one code
    torch.testing.assert_close(m.indices_to_latent(idx), m.encode(x))
    torch.testing.assert_close(m.decode_indices(idx), m.decode(m.encode(x)))


def test_residual_vq_indices_sum_of_codes_and_training():
    """num_quantizers 2 (RQ-VAE): indices gain a codebook axis, the latent is the sum of the picked codes,
    the second codebook starts from the first one's residual and lowers the quantisation error."""
    m = _tiny("vq", num_quantizers=2)
    x = torch.rand(8, 1, 32, 32)
    recon, loss = m.train()(x)
    assert recon.shape == x.shape and torch.isfinite(loss) and int(m.codebook_ready) == 1
    assert len(m.code_perplexity) == 2 and all(1.0 <= p <= 32.0 + 1e-3 for p in m.code_perplexity)
    assert m.code_perplexity[1] > 4  # the residual book starts from residuals: in use, not collapsed
    m.eval()
    idx = m.encode_indices(x)
    assert idx.shape == (8, 2, 8, 8) and idx.dtype == torch.int64
    books = m.codebooks()
    assert books.shape == (2, 32, 3)
    by_hand = books[0][idx[:, 0]] + books[1][idx[:, 1]]  # (B, h, w, C)
    torch.testing.assert_close(m.encode_unscaled(x), by_hand.movedim(-1, 1))
    torch.testing.assert_close(m.indices_to_latent(idx), m.encode(x))
    torch.testing.assert_close(m.decode_indices(idx), m.decode(m.encode(x)))
    with torch.no_grad():
        h = m.net.encode(2 * x - 1)
        first = m.quantizers[0].embed(idx[:, 0])
    assert ((h - m.encode_unscaled(x)) ** 2).mean() < ((h - first) ** 2).mean()
    with pytest.raises(ValueError, match="2 codebooks"):
        m.decode_indices(idx[:, 0])
    # the training step's straight-through latent carries the encoder's gradient and both codebooks move
    before = books.clone()
    m.train()
    recon, loss = m(x)
    (recon.mean() + loss).backward()
    assert m.net.encoder.blocks[0].conv.weight.grad.abs().sum() > 0
    assert not torch.equal(m.codebooks()[1], before[1])


def test_one_codebook_is_unchanged_by_the_residual_option():
    """num_quantizers 1 keeps MONAI's own quantizer path: same weights, indices and reconstructions."""
    a, b = _tiny("vq"), _tiny("vq", num_quantizers=1)
    x = torch.rand(4, 1, 16, 16)
    torch.manual_seed(3)
    ra = a.train()(x)[0]
    torch.manual_seed(3)
    rb = b.train()(x)[0]
    assert torch.equal(ra, rb) and len(b.residual) == 0
    assert torch.equal(a.eval().encode_indices(x), b.eval().encode_indices(x))


@pytest.mark.parametrize("kind", ["kl", "vq", "rvq"])
def test_save_from_pretrained_bit_equal(kind, tmp_path):
    m = _tiny("vq", num_quantizers=3) if kind == "rvq" else _tiny(kind)
    m.train()(torch.rand(4, 1, 16, 16))  # VQ: codebook + EMA buffers move
    m.set_scale_factor(1.7)
    m.eval().save_pretrained(tmp_path / "ae")
    loaded = load_model(tmp_path / "ae")
    assert type(loaded) is type(m) and loaded.config == m.config
    a, b = m.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(m.decode(m.encode(x)), loaded.decode(loaded.encode(x)))
    again, where = load_autoencoder(tmp_path / "ae")
    assert where == tmp_path / "ae" and again.config.scale_factor == 1.7


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_3d_volumes(kind):
    m = _tiny(kind, spatial_dims=3).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    z = m.encode(x)
    assert z.shape == (1, 3, 4, 4, 4) == (1, *m.latent_shape(16))
    assert m.decode(z).shape == x.shape
    recon = m.train()(x)[0]
    assert recon.shape == x.shape
    if kind == "vq":
        assert m.eval().encode_indices(x).shape == (1, 4, 4, 4)


@pytest.mark.parametrize("dims", [2, 3])
def test_space_to_depth_fold_is_pixel_unshuffle_and_inverts(dims):
    m = _tiny("kl", patch_size=2, spatial_dims=dims)
    sides = (8, 12) if dims == 2 else (4, 8, 12)
    x = torch.rand(2, 1, *sides)
    folded = m._fold(x)
    assert folded.shape == (2, 2**dims, *(s // 2 for s in sides))
    assert torch.equal(m._unfold(folded), x)
    if dims == 2:
        assert torch.equal(folded, torch.nn.functional.pixel_unshuffle(x, 2))
    else:  # channel (i, j, k) holds the voxel at offset (i, j, k) of each 2x2x2 block
        assert torch.equal(folded[:, 0b101], x[:, 0, 1::2, 0::2, 1::2])


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_patch_size_shapes_and_round_trip(kind, tmp_path):
    m = _tiny(kind, patch_size=2)
    assert m.downsample_factor == 8 and m.latent_shape(64) == (3, 8, 8)
    first = next(mod for mod in m.net.modules() if isinstance(mod, torch.nn.Conv2d))
    assert first.in_channels == 4  # the network reads the 2x2-folded image
    x = torch.rand(2, 1, 32, 32)
    assert m.train()(x)[0].shape == x.shape
    m.eval().save_pretrained(tmp_path / "ae")
    loaded = load_model(tmp_path / "ae")
    assert loaded.config.patch_size == 2 and torch.equal(m.reconstruct(x), loaded.reconstruct(x))
    with pytest.raises(ValueError, match="divisible"):
        m.encode(torch.rand(1, 1, 36, 36))  # 36 is not a multiple of f=8


def test_kl_without_norm_has_no_group_norm_and_ignores_the_group_count(tmp_path):
    m = _tiny("kl", norm="none", channels=[8, 12, 12], norm_num_groups=8)  # 12 % 8 only matters with GroupNorm
    assert not any(isinstance(mod, torch.nn.GroupNorm) for mod in m.modules())
    assert any(isinstance(mod, torch.nn.GroupNorm) for mod in _tiny("kl").modules())
    x = torch.rand(2, 1, 32, 32)
    recon, mu, logvar = m.train()(x)
    assert recon.shape == x.shape and torch.isfinite(recon).all() and mu.shape == logvar.shape == (2, 3, 8, 8)
    m.eval().save_pretrained(tmp_path / "ae")
    assert torch.equal(load_model(tmp_path / "ae").reconstruct(x), m.reconstruct(x))
    # a per-pixel network: the reconstruction of a crop's centre does not depend on the rest of the image
    # beyond the receptive field, as it would through per-image GroupNorm statistics
    big = torch.rand(1, 1, 64, 64)
    other = big.clone()
    other[..., :, 48:] = 1.0 - other[..., :, 48:]
    assert torch.allclose(m.reconstruct(big)[..., :, :16], m.reconstruct(other)[..., :, :16], atol=1e-6)
    g = _tiny("kl").eval()
    assert not torch.allclose(g.reconstruct(big)[..., :, :16], g.reconstruct(other)[..., :, :16], atol=1e-6)


def test_config_checks(tmp_path):
    with pytest.raises(ValueError, match="norm_num_groups"):
        AutoencoderConfig(kind="kl", channels=[8, 12], norm_num_groups=8)
    with pytest.raises(ValueError, match="divisible"):
        AutoencoderConfig(channels=[32, 64, 64], image_size=130)
    with pytest.raises(ValueError, match="kind"):
        VQVAEModel(AutoencoderConfig(kind="kl", **TINY))
    assert AutoencoderConfig(channels=[32, 64, 64, 64]).downsample_factor == 8
    with pytest.raises(UnicxrError):
        load_autoencoder(tmp_path)
