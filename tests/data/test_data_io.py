from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from data_test_trees import gradient, write_bomb_png, write_dicom, write_jpeg, write_png
from PIL import Image

from unicxr.data.io import DecodeError, DecodeLimits, decode_image, is_image_candidate, resize_square, to_uint


@pytest.fixture
def pydicom():
    """pydicom, or skip the test: only the DICOM cases need it (PNG/JPEG decoding never does)."""
    return pytest.importorskip("pydicom")


# ----------------------------------------------------------------------------------------- PNG / JPEG
def test_png_8bit_roundtrip(tmp_path):
    img = gradient()
    out = decode_image(write_png(tmp_path / "a.png", img))
    assert out.dtype == np.float32 and out.shape == img.shape
    assert np.abs(out - img).max() <= 0.5 / 255 + 1e-6


def test_png_16bit_full_precision(tmp_path):
    img = gradient()
    out = decode_image(write_png(tmp_path / "a.png", img, bits=16))
    assert np.abs(out - img).max() < 1e-4  # far below 8-bit quantisation
    assert len(np.unique(out)) > 256 or len(np.unique(img)) <= 256


def test_png_16bit_container_with_12bit_data_is_not_dark(tmp_path):
    img = gradient()
    stored = np.round(img * 4095).astype(np.uint16)
    Image.fromarray(stored).save(tmp_path / "p.png")
    out = decode_image(tmp_path / "p.png")
    np.testing.assert_allclose(out, stored / 4095.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "1"])
def test_color_and_alpha_modes_become_gray(tmp_path, mode):
    img = gradient()
    out = decode_image(write_png(tmp_path / f"a_{mode}.png", img, mode=mode))
    assert out.shape == img.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    if mode != "1":  # 1-bit dithers
        assert np.abs(out - img).max() < 0.02


def test_rgb_luminance_weights(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 255  # pure green
    Image.fromarray(rgb, "RGB").save(tmp_path / "g.png")
    assert decode_image(tmp_path / "g.png") == pytest.approx(np.full((8, 8), 0.587, np.float32), abs=1e-3)


def test_jpeg_and_exif_orientation(tmp_path):
    img = gradient(48, 40)
    plain = decode_image(write_jpeg(tmp_path / "a.jpg", img))
    assert plain.shape == (48, 40) and np.abs(plain - img).mean() < 0.02
    # orientation 6 = rotate 90° clockwise for display: the decoded image is transposed in shape
    rotated = decode_image(write_jpeg(tmp_path / "r.jpg", img, exif_orientation=6))
    assert rotated.shape == (40, 48)
    np.testing.assert_allclose(rotated, np.rot90(plain, k=-1), atol=0.03)


def test_jpeg_draft_keeps_at_least_requested_size(tmp_path):
    img = gradient(512, 400)
    out = decode_image(write_jpeg(tmp_path / "big.jpg", img), draft_size=100)
    assert min(out.shape) >= 100 and out.shape[0] < 512


def test_kind_is_sniffed_not_taken_from_extension(tmp_path):
    img = gradient()
    p = write_png(tmp_path / "really_png.png", img).rename(tmp_path / "really_png.jpg")
    assert np.abs(decode_image(p) - img).max() < 0.01


# ------------------------------------------------------------------------------------------ bad files
def test_empty_file(tmp_path):
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty"):
        decode_image(tmp_path / "e.jpg")


def test_truncated_png(tmp_path):
    p = write_png(tmp_path / "t.png", gradient(200, 200, seed=3))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError) as info:
        decode_image(p)
    assert "truncated" in info.value.reason or "corrupt" in info.value.reason


def test_text_file_named_dcm(tmp_path, pydicom):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not an image\n" * 20)
    with pytest.raises(DecodeError, match="not a DICOM"):
        decode_image(p)


def test_random_bytes_and_missing_file(tmp_path):
    p = tmp_path / "junk.png"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DecodeError, match="not a recognised image"):
        decode_image(p)
    with pytest.raises(DecodeError, match="not found"):
        decode_image(tmp_path / "nope.png")


def test_file_size_limit(tmp_path):
    p = write_png(tmp_path / "a.png", gradient())
    with pytest.raises(DecodeError, match="too large"):
        decode_image(p, limits=DecodeLimits(max_file_bytes=10))


def test_pixel_limit_from_header(tmp_path):
    p = write_png(tmp_path / "a.png", gradient(48, 40))
    with pytest.raises(DecodeError, match="too large: 40x48"):
        decode_image(p, limits=DecodeLimits(max_pixels=1000))


def test_bomb_rejected_fast_and_small_in_a_fresh_process(tmp_path):
    """40,000 × 40,000 PNG: rejected from its header in < 2 s and < 500 MB peak RSS."""
    bomb = write_bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1_000_000
    code = textwrap.dedent(
        f"""
        import json, resource, time
        from unicxr.data.io import DecodeError, decode_image

        def peak_kb():
            # this process's own high-water mark: on Linux ru_maxrss also keeps the RSS the forking
            # parent had (a large pytest process), so read VmHWM where /proc has it
            try:
                with open("/proc/self/status") as fh:
                    return next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:"))
            except (OSError, StopIteration):
                return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        base = peak_kb()
        t = time.process_time()  # CPU time: robust to a busy machine
        try:
            decode_image({str(bomb)!r})
            reason = None
        except DecodeError as e:
            reason = e.reason
        dt = time.process_time() - t
        print(json.dumps({{"reason": reason, "seconds": dt, "peak_rss_kb": peak_kb(), "base_rss_kb": base}}))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["reason"] is not None and ("bomb" in info["reason"] or "too large" in info["reason"])
    assert info["seconds"] < 2.0
    assert info["peak_rss_kb"] < 500 * 1024


# ---------------------------------------------------------------------------------------------- DICOM
def _stored(h=32, w=24, top=4095):
    return (np.arange(h * w).reshape(h, w) * (top / (h * w - 1))).astype(np.uint16)


def test_dicom_monochrome1_is_inverse_of_monochrome2(tmp_path, pydicom):
    px = _stored()
    m2 = decode_image(write_dicom(tmp_path / "m2.dcm", px, "MONOCHROME2", bits_stored=12))
    m1 = decode_image(write_dicom(tmp_path / "m1.dcm", px, "MONOCHROME1", bits_stored=12))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m2[0, 0] == 0.0 and m2[-1, -1] == 1.0  # MONOCHROME2: low values dark
    # with a window too
    w2 = decode_image(write_dicom(tmp_path / "w2.dcm", px, bits_stored=12, WindowCenter=2000, WindowWidth=1000))
    w1 = decode_image(write_dicom(tmp_path / "w1.dcm", px, "MONOCHROME1", bits_stored=12, WindowCenter=2000,
                                  WindowWidth=1000))
    np.testing.assert_allclose(w1, 1.0 - w2, atol=1e-6)


def test_dicom_12bit_in_16bit_storage_ignores_high_bits(tmp_path, pydicom):
    px = _stored()
    clean = decode_image(write_dicom(tmp_path / "c.dcm", px, bits_stored=12, WindowCenter=2048, WindowWidth=4096))
    dirty = decode_image(write_dicom(tmp_path / "d.dcm", px | 0xF000, bits_stored=12, WindowCenter=2048,
                                     WindowWidth=4096))
    np.testing.assert_array_equal(clean, dirty)
    # a 12-bit full-range window maps stored 4095 to white and 0 to black
    assert clean[-1, -1] == pytest.approx(1.0, abs=1e-3) and clean[0, 0] == pytest.approx(0.0, abs=1e-3)


def test_dicom_window_center_width_linear(tmp_path, pydicom):
    px = _stored()
    out = decode_image(write_dicom(tmp_path / "w.dcm", px, bits_stored=12, WindowCenter=1000, WindowWidth=400))
    x = px.astype(np.float64)
    expected = np.clip((x - (1000 - 0.5)) / (400 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert (out[px < 800] == 0).all() and (out[px > 1200] == 1).all()


def test_dicom_window_after_rescale(tmp_path, pydicom):
    px = _stored(top=2000)
    out = decode_image(write_dicom(tmp_path / "r.dcm", px, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000,
                                   WindowCenter=0, WindowWidth=2000))
    hu = px * 2.0 - 1000
    np.testing.assert_allclose(out, np.clip((hu + 0.5) / 1999 + 0.5, 0, 1), atol=1e-5)


def test_dicom_voi_lut_sequence(tmp_path, pydicom):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    px = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint16)
    item = Dataset()
    lut = (255 - np.arange(256)).astype(np.uint16)  # an inverting 8-bit LUT
    item.LUTDescriptor = [256, 0, 8]
    item.LUTData = lut.astype("<u2").tobytes()
    out = decode_image(write_dicom(tmp_path / "v.dcm", px, bits_stored=8, VOILUTSequence=Sequence([item])))
    np.testing.assert_allclose(out, (255 - px) / 255.0, atol=1e-6)


def test_dicom_rgb(tmp_path, pydicom):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[4:, :, 2] = 255
    out = decode_image(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB"))
    assert out.shape == (8, 8)
    assert out[0, 0] == pytest.approx(0.299, abs=1e-3) and out[7, 0] == pytest.approx(0.413, abs=1e-3)


def test_dicom_without_voi_uses_full_range(tmp_path, pydicom):
    px = (np.arange(64).reshape(8, 8) + 100).astype(np.uint16)
    out = decode_image(write_dicom(tmp_path / "n.dcm", px, bits_stored=16))
    assert out.min() == 0.0 and out.max() == 1.0


def test_dicom_signed_pixels(tmp_path, pydicom):
    px = np.arange(-32, 32, dtype=np.int16).reshape(8, 8)
    out = decode_image(write_dicom(tmp_path / "s.dcm", px, bits_stored=16))
    np.testing.assert_allclose(out, (px + 32) / 63.0, atol=1e-6)


def test_dicom_unsupported_transfer_syntax(tmp_path, pydicom):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    p = write_dicom(tmp_path / "jls.dcm", _stored(), bits_stored=12, transfer_syntax=JPEGLSLossless,
                    PixelData=encapsulate([b"\xff\xd8not really jpeg-ls\xff\xd9"]))
    with pytest.raises(DecodeError) as info:
        decode_image(p)
    assert "transfer syntax" in info.value.reason or "compressed" in info.value.reason


def test_dicom_truncated_pixel_data(tmp_path, pydicom):
    p = write_dicom(tmp_path / "t.dcm", _stored(64, 64), bits_stored=12)
    data = p.read_bytes()
    p.write_bytes(data[:-2000])
    with pytest.raises(DecodeError):
        decode_image(p)


def test_dicom_pixel_limit_before_pixels(tmp_path, pydicom):
    p = write_dicom(tmp_path / "a.dcm", _stored(), bits_stored=12)
    with pytest.raises(DecodeError, match="too large"):
        decode_image(p, limits=DecodeLimits(max_pixels=100))


def test_extensionless_dicom_is_candidate(tmp_path, pydicom):
    p = write_dicom(tmp_path / "1.2.840.113619.2.55.3.604688119", _stored(), bits_stored=12)
    assert is_image_candidate(p)
    assert decode_image(p).shape == (32, 24)
    (tmp_path / "README").write_text("hello")
    assert not is_image_candidate(tmp_path / "README")
    assert not is_image_candidate(tmp_path / "notes.txt")


# ---------------------------------------------------------------------------------------- resampling
def test_resize_pad_and_crop():
    img = np.ones((100, 50), np.float32)
    pad = resize_square(img, 32, "pad")
    assert pad.shape == (32, 32)
    assert pad[:, :8].max() == 0.0 and pad[:, -8:].max() == 0.0  # black side bars
    assert pad[:, 8:24].min() > 0.99
    crop = resize_square(img, 32, "crop")
    assert crop.shape == (32, 32) and crop.min() > 0.99


def test_resize_preserves_mean_on_downscale():
    img = gradient(400, 400)
    small = resize_square(img, 50)
    assert abs(float(small.mean()) - float(img.mean())) < 0.01
    assert 0.0 <= small.min() and small.max() <= 1.0


def test_to_uint():
    x = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert to_uint(x, 8).tolist() == [[0, 128, 255]] and to_uint(x, 8).dtype == np.uint8
    assert to_uint(x, 16).tolist() == [[0, 32768, 65535]] and to_uint(x, 16).dtype == np.uint16
    with pytest.raises(ValueError):
        to_uint(x, 12)


# ------------------------------------------------------------------ compressed and raw DICOM (real-world)
def test_dicom_rle_lossless(tmp_path, pydicom):
    from pydicom.uid import RLELossless

    px = _stored()
    p = write_dicom(tmp_path / "plain.dcm", px, bits_stored=12)
    ds = pydicom.dcmread(p)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.save_as(tmp_path / "rle.dcm")
    np.testing.assert_allclose(decode_image(tmp_path / "rle.dcm"), decode_image(p), atol=1e-6)


@pytest.mark.parametrize("kind", ["jpeg2000", "jpeg"])
def test_dicom_encapsulated_jpeg_family_via_pillow(tmp_path, kind, pydicom):
    import io

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

    img = np.round(gradient(64, 48) * 255).astype(np.uint8)
    buf = io.BytesIO()
    if kind == "jpeg2000":
        Image.fromarray(img).save(buf, "JPEG2000", irreversible=False, no_jp2=True)
        ts = JPEG2000Lossless
    else:
        Image.fromarray(img).save(buf, "JPEG", quality=95)
        ts = JPEGBaseline8Bit
    p = write_dicom(tmp_path / f"{kind}.dcm", img, transfer_syntax=ts, PixelData=encapsulate([buf.getvalue()]))
    ds = pydicom.dcmread(p)
    ds["PixelData"].VR = "OB"
    ds.save_as(p)
    out = decode_image(p)
    assert out.shape == (64, 48)
    ref = (img.astype(np.float32) - img.min()) / (img.max() - img.min())  # no window: full range
    assert np.abs(out - ref).mean() < 0.02


def test_dicom_without_preamble_is_read(tmp_path, pydicom):
    px = _stored()
    ref = decode_image(write_dicom(tmp_path / "ref.dcm", px, bits_stored=12))
    ds = pydicom.dcmread(tmp_path / "ref.dcm")
    raw = tmp_path / "raw.dcm"
    ds.preamble = None
    del ds.file_meta
    pydicom.dcmwrite(raw, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert raw.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(decode_image(raw), ref, atol=1e-6)


def test_dicom_multiframe_first_frame(tmp_path, pydicom):
    frames = np.stack([_stored(16, 16, 4095), 4095 - _stored(16, 16, 4095)])
    p = write_dicom(tmp_path / "mf.dcm", frames[0], bits_stored=12, NumberOfFrames=2,
                    PixelData=np.ascontiguousarray(frames).tobytes())
    out = decode_image(p)
    assert out.shape == (16, 16) and out[0, 0] == 0.0 and out[-1, -1] == 1.0
