"""Robust image decoding: PNG (8/16-bit), JPEG, other Pillow formats and DICOM → float32 (H, W) in [0, 1].

Every failure mode of a single file (empty, too large, decompression bomb, truncated, corrupt, not an
image, unsupported DICOM transfer syntax, decoder error) becomes a :class:`DecodeError` with a short
``reason``; nothing else escapes :func:`decode_image`, so one bad file never stops a long job.

Guards are applied before any pixel data is decoded: the file size is checked with ``stat``, the pixel
count is read from the header (Pillow's ``Image.open`` and pydicom's ``stop_before_pixels`` read only
the header).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DecodeError",
    "DecodeLimits",
    "DEFAULT_LIMITS",
    "IMAGE_EXTENSIONS",
    "sniff_kind",
    "is_image_candidate",
    "decode_image",
    "decode_dicom",
    "resize_square",
    "to_uint",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".dcm", ".dicom", ".dic", ".tif", ".tiff", ".bmp", ".pgm", ".webp"}
)


class DecodeError(Exception):
    """A file that cannot be turned into an image; ``reason`` is a short human-readable cause."""

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(str(reason).split())[:300]
        super().__init__(self.reason)


@dataclass(frozen=True)
class DecodeLimits:
    """Resource guards for one file.

    Attributes:
        max_pixels: largest allowed width × height (per frame), checked from the header.
        max_file_bytes: largest allowed file size on disk.
    """

    max_pixels: int = 60_000_000
    max_file_bytes: int = 512 * 1024 * 1024


DEFAULT_LIMITS = DecodeLimits()

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sniff_kind(head: bytes) -> str:
    """Guess a file kind from its first 132+ bytes: ``png``, ``jpeg``, ``dicom``, ``tiff``, ``bmp``, ``other``."""
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    return "other"


def _read_head(path: Path, n: int = 132) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def is_image_candidate(path: str | os.PathLike[str]) -> bool:
    """True for a file with an image/DICOM extension, or an extension-less file with the DICOM magic."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    if suffix and not suffix[1:].isdigit():  # "1.2.840.113619.2.55.3.604688119.1.dcm"-less UIDs end in digits
        return False
    try:
        return sniff_kind(_read_head(p)) == "dicom"
    except OSError:
        return False


def decode_image(
    path: str | os.PathLike[str],
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    draft_size: int | None = None,
) -> np.ndarray:
    """Decode one radiograph into a float32 grayscale array in [0, 1].

    PNG/JPEG/TIFF/BMP go through Pillow (16-bit grayscale kept at full precision, RGB/RGBA/LA/P
    converted to luminance, alpha ignored, EXIF orientation applied); DICOM goes through
    :func:`decode_dicom`. The kind is sniffed from the file's magic bytes, not its extension.

    Args:
        path: file to read.
        limits: size and pixel-count guards.
        draft_size: if given, JPEGs may be decoded at a reduced scale whose shorter side stays
            ≥ this many pixels (much faster when the result is downsized anyway).

    Returns:
        float32 array of shape (H, W), values in [0, 1], no NaN.

    Raises:
        DecodeError: the file cannot be decoded; ``reason`` says why.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except OSError as exc:
        raise DecodeError(f"cannot stat file: {exc.strerror or exc}") from None
    if not p.is_file():
        raise DecodeError("not a regular file")
    if size == 0:
        raise DecodeError("empty file (0 bytes)")
    if size > limits.max_file_bytes:
        raise DecodeError(f"file too large: {size} bytes > limit {limits.max_file_bytes}")
    try:
        head = _read_head(p)
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    kind = sniff_kind(head)
    try:
        if kind == "dicom" or (kind == "other" and p.suffix.lower() in (".dcm", ".dicom", ".dic", "")):
            arr = decode_dicom(p, limits=limits, require_magic=(kind == "dicom"))
        else:
            arr = _decode_pillow(p, limits=limits, draft_size=draft_size)
    except DecodeError:
        raise
    except MemoryError:
        raise DecodeError("out of memory while decoding") from None
    except RecursionError:
        raise DecodeError("corrupt file (decoder recursion)") from None
    except Exception as exc:  # any decoder failure is a rejection, never a crash
        raise DecodeError(f"decode failed: {type(exc).__name__}: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DecodeError(f"unexpected decoded shape {arr.shape}")
    arr = np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(arr, 0.0, 1.0, out=arr)


# --------------------------------------------------------------------------------------------- Pillow
def _luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) → (H, W) ITU-R BT.601 luma, float32."""
    rgb = rgb.astype(np.float32, copy=False)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def _decode_pillow(path: Path, *, limits: DecodeLimits, draft_size: int | None) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)  # reads the header only
        except Image.DecompressionBombError as exc:
            raise DecodeError(f"decompression bomb: {exc}") from None
        except UnidentifiedImageError:
            raise DecodeError("not a recognised image file") from None
        with im:
            w, h = im.size
            if w * h > limits.max_pixels:
                raise DecodeError(
                    f"image too large: {w}x{h} = {w * h} pixels > limit {limits.max_pixels} (decompression bomb guard)"
                )
            if w <= 0 or h <= 0:
                raise DecodeError(f"invalid image size {w}x{h}")
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            if draft_size and im.format == "JPEG":
                # the EXIF transpose below may swap sides; request the shorter side on both axes
                im.draft(im.mode if im.mode in ("L", "RGB") else None, (draft_size, draft_size))
            try:
                im.load()
            except Image.DecompressionBombError as exc:
                raise DecodeError(f"decompression bomb: {exc}") from None
            except (OSError, SyntaxError, ValueError) as exc:
                msg = str(exc)
                if "truncated" in msg.lower():
                    raise DecodeError(f"truncated image: {msg}") from None
                raise DecodeError(f"corrupt image: {msg}") from None
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # a broken EXIF block is not worth rejecting the pixels
                pass
            return _pil_to_float(im)


def _sixteen_bit_top(max_value: int) -> float:
    """Full-scale value of 16-bit-container pixels: 2**bits - 1 with bits in {10, 12, 14, 16}.

    Many 16-bit PNGs (PadChest, DICOM exports) hold 10-, 12- or 14-bit data; scaling them by 65535
    would give nearly black images. The smallest even bit depth ≥ 10 that holds the maximum is used.
    """
    for bits in (10, 12, 14):
        if max_value < 2**bits:
            return float(2**bits - 1)
    return 65535.0


def _pil_to_float(im) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        a = np.asarray(im, dtype=np.uint16)
        return a.astype(np.float32) / _sixteen_bit_top(int(a.max(initial=0)))
    if mode == "I":
        a = np.asarray(im, dtype=np.int64)
        lo, hi = int(a.min(initial=0)), int(a.max(initial=0))
        if lo < 0 or hi > 65535:
            return ((a - lo) / max(hi - lo, 1)).astype(np.float32)
        return (a / _sixteen_bit_top(hi)).astype(np.float32)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return np.zeros_like(a)
        lo, hi = float(finite.min()), float(finite.max())
        if lo >= 0.0 and hi <= 1.0:
            return a
        return (a - lo) / max(hi - lo, 1e-12)
    if mode == "L":
        return np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.uint8).astype(np.float32) / 255.0
    if mode == "LA":
        return np.asarray(im, dtype=np.uint8)[..., 0].astype(np.float32) / 255.0
    if mode in ("RGB", "RGBA", "RGBX"):
        return _luminance(np.asarray(im, dtype=np.uint8)[..., :3]) / 255.0
    if mode in ("P", "PA"):
        rgb = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
        return _luminance(np.asarray(rgb, dtype=np.uint8)[..., :3]) / 255.0
    # CMYK, YCbCr, LAB, HSV, I;16 variants with odd endianness, ...
    return _luminance(np.asarray(im.convert("RGB"), dtype=np.uint8)) / 255.0


# ---------------------------------------------------------------------------------------------- DICOM
def _first(value) -> float:
    """First value of a possibly multi-valued DICOM element as float."""
    try:
        from pydicom.multival import MultiValue

        if isinstance(value, (MultiValue, list, tuple)):
            value = value[0]
    except ImportError:  # pragma: no cover
        pass
    return float(value)


def decode_dicom(path: str | os.PathLike[str], *, limits: DecodeLimits = DEFAULT_LIMITS, require_magic: bool = True) -> np.ndarray:
    """Decode the first frame of a DICOM file into float32 (H, W) in [0, 1] as it should be displayed.

    Pipeline: stored values masked to BitsStored (sign-extended when signed) → modality LUT
    (Rescale Slope/Intercept or Modality LUT Sequence) → VOI LUT Sequence, else the first
    Window Center/Width (LINEAR, LINEAR_EXACT or SIGMOID), else the full range of the pixel values
    → inverted for MONOCHROME1 (and for Presentation LUT Shape INVERSE). Colour images (RGB, YBR,
    PALETTE COLOR) become luminance scaled by their bit depth.

    Raises:
        DecodeError: not a DICOM file, no pixel data, too many pixels, unsupported transfer syntax,
            or a decoder error.
    """
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # pragma: no cover - pydicom is an optional dependency
        raise DecodeError("DICOM file but pydicom is not installed (pip install pydicom)") from None

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=not require_magic)
    except InvalidDicomError:
        raise DecodeError("not a DICOM file (no DICM preamble)") from None
    except Exception as exc:
        raise DecodeError(f"corrupt DICOM header: {type(exc).__name__}: {exc}") from None
    if "Rows" not in ds or "Columns" not in ds:
        raise DecodeError("not a DICOM image (no Rows/Columns)" if require_magic else "not a DICOM or image file")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"invalid DICOM image header: {exc}") from None
    if rows <= 0 or cols <= 0:
        raise DecodeError(f"invalid DICOM size {cols}x{rows}")
    if rows * cols > limits.max_pixels:
        raise DecodeError(f"image too large: {cols}x{rows} = {rows * cols} pixels > limit {limits.max_pixels}")
    if frames < 1 or samples not in (1, 3, 4):
        raise DecodeError(f"unsupported DICOM layout: frames={frames}, samples per pixel={samples}")

    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        full = pydicom.dcmread(path, force=not require_magic)
    except Exception as exc:
        raise DecodeError(f"corrupt DICOM file: {type(exc).__name__}: {exc}") from None
    if "PixelData" not in full and "FloatPixelData" not in full and "DoubleFloatPixelData" not in full:
        raise DecodeError("DICOM file has no pixel data")
    if tsyntax is None:
        tsyntax = _infer_transfer_syntax(full)
    try:
        from pydicom.pixels import pixel_array

        arr = pixel_array(full, index=0 if frames > 1 else None)
    except NotImplementedError as exc:
        raise DecodeError(_syntax_reason(tsyntax, exc)) from None
    except RuntimeError as exc:
        msg = str(exc).lower()
        if "missing dependencies" in msg or "no pixel data decoders" in msg or "not supported" in msg:
            raise DecodeError(_syntax_reason(tsyntax, exc)) from None
        name = getattr(tsyntax, "name", None) or str(tsyntax)
        raise DecodeError(f"corrupt compressed DICOM pixel data ({name}): {str(exc)[:160]}") from None
    except (ValueError, AttributeError, TypeError, KeyError, OSError, EOFError) as exc:
        raise DecodeError(f"DICOM pixel data unreadable (truncated or corrupt): {type(exc).__name__}: {exc}") from None
    return _dicom_to_display(np.asarray(arr), full)


def _infer_transfer_syntax(ds):
    """Set the Transfer Syntax UID of a raw dataset (no file meta) from the encoding it was read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is None:
        implicit = True
    uid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian)
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    return uid


def _syntax_reason(tsyntax, exc: Exception) -> str:
    name = getattr(tsyntax, "name", None) or str(tsyntax)
    return f"unsupported DICOM transfer syntax {tsyntax} ({name}): no decoder available ({str(exc)[:120]})"


def _dicom_to_display(arr: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits_stored = int(getattr(ds, "BitsStored", 0) or getattr(ds, "BitsAllocated", 8) or 8)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        top = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else max(float(rgb.max()), 1.0)
        return _luminance(rgb) / top
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB / YBR (pydicom converts YBR to RGB)
        rgb = arr[..., :3]
        top = float(2 ** min(bits_stored, 16) - 1) if np.issubdtype(rgb.dtype, np.integer) else max(float(rgb.max()), 1.0)
        return _luminance(rgb) / top
    if arr.ndim != 2:
        raise DecodeError(f"unsupported DICOM pixel array shape {arr.shape}")

    if np.issubdtype(arr.dtype, np.integer) and 0 < bits_stored < arr.dtype.itemsize * 8:
        # keep only the BitsStored low bits (overlay / garbage bits above them are not image data)
        a = arr.astype(np.int64) & ((1 << bits_stored) - 1)
        if signed:
            sign = 1 << (bits_stored - 1)
            a = np.where(a & sign, a - (1 << bits_stored), a)
        arr = a
    modality = apply_modality_lut(arr, ds)
    x = modality.astype(np.float64, copy=False)

    out: np.ndarray | None = None
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        item = ds.VOILUTSequence[0]
        try:
            voi_in = modality
            if not np.issubdtype(voi_in.dtype, np.integer):
                voi_in = np.round(x).astype(np.int64)  # VOI LUTs index integer values
            y = apply_voi(voi_in, ds, index=0).astype(np.float64)
            desc = list(item.LUTDescriptor)
            lut_bits = int(desc[2]) if len(desc) > 2 and int(desc[2]) > 0 else 16
            top = float(2**lut_bits - 1)
            raw = getattr(item, "LUTData", b"")
            if isinstance(raw, (bytes, bytearray)):
                data = np.frombuffer(bytes(raw)[: len(raw) // 2 * 2], dtype="<u2").astype(np.float64)
            else:
                data = np.asarray(raw, dtype=np.float64).ravel()
            if data.size and data.max() <= 255 and lut_bits > 8:
                top = 255.0  # common header error: descriptor says 16 bits, data are 8 bits
            out = y / top
        except Exception:
            out = None  # fall back to window / full range
    if out is None and "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            c = _first(ds.WindowCenter)
            w = _first(ds.WindowWidth)
        except (TypeError, ValueError, IndexError):
            c, w = float("nan"), float("nan")
        if np.isfinite(c) and np.isfinite(w) and w > 0:
            func = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
            if func == "SIGMOID":
                out = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - c) / w, -60, 60)))
            elif func == "LINEAR_EXACT":
                out = (x - c) / w + 0.5
            else:  # LINEAR (DICOM PS3.3 C.11.2.1.2.1)
                out = (x - (c - 0.5)) / max(w - 1.0, 1e-6) + 0.5
    if out is None:
        lo, hi = float(np.min(x)), float(np.max(x))
        out = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    out = np.clip(out, 0.0, 1.0)
    invert = photometric == "MONOCHROME1"
    if str(getattr(ds, "PresentationLUTShape", "")).strip().upper() == "INVERSE":
        invert = not invert
    if invert:
        out = 1.0 - out
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------- resampling
def resize_square(img: np.ndarray, size: int, fit: str = "pad") -> np.ndarray:
    """Aspect-preserving resize of a (H, W) float image to (size, size).

    Args:
        img: float32 (H, W) in [0, 1].
        size: output side in pixels.
        fit: ``"pad"`` (whole image, centred, black borders) or ``"crop"`` (centre square crop).

    Returns:
        float32 (size, size) in [0, 1].
    """
    from PIL import Image

    if fit not in ("pad", "crop"):
        raise ValueError(f"fit must be 'pad' or 'crop', got {fit!r}")
    h, w = img.shape
    if fit == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top : top + side, left : left + side]
        h = w = side
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F")
    if (nh, nw) != (h, w):
        # integer pre-reduction by box averaging, then an antialiased bicubic to the exact size
        factor = min(h // nh, w // nw) // 2
        if factor >= 2:
            im = im.reduce(factor)
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    small = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
    if (nh, nw) == (size, size):
        return np.ascontiguousarray(small)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out


def to_uint(img: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Quantise float [0, 1] to uint8 (``bit_depth=8``) or uint16 (``16``) with rounding."""
    if bit_depth == 8:
        return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    if bit_depth == 16:
        return np.round(np.clip(img, 0.0, 1.0) * 65535.0).astype(np.uint16)
    raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
