"""Feature extractors for image metrics, behind one interface, all loaded from local files.

``parse_features_spec(spec)`` builds one from a string:

* ``own:RUN_OR_MODEL_DIR`` — our evaluation encoder (:class:`unicxr.models.classifier.CXRClassifier`),
  from a training run (``RUN/model_ema`` if present, else ``RUN/model``) or a saved model directory.
* ``xrv:FILE`` — a torchxrayvision-style DenseNet (e.g. ``densenet121-res224-all``) from a local
  ``.safetensors`` or a plain state-dict ``.pt/.pth`` (read with ``weights_only=True``; a pickled
  whole model is refused). Built as a MONAI DenseNet whose shape is read from the weights, with the
  torchvision/xrv key names mapped; xrv preprocessing (square crop, 224 px, values in [-1024, 1024]).
* ``hf:DIR`` — any local Hugging Face vision model directory (DINOv2/RAD-DINO: CLS token; CLIP/SigLIP:
  image embedding), preprocessing read from its image-processor config; ``local_files_only=True``.
* ``inception:FILE`` — an Inception-v3 (or any image network) exported as TorchScript (``.pt``) or
  ``torch.export`` (``.pt2``) mapping (B, 3, S, S) → (B, D). Options after ``?``: ``size`` (default 299)
  and ``range`` (``01`` default, ``pm1`` or ``255``), e.g. ``inception:pt_inception.pt?range=255``.

Every extractor takes images (B, 1, H, W) float in [0, 1] and returns features (B, D) float32;
``preprocessing`` (a dict) records exactly what was done to the images and goes into every result.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unicxr.labels import FINDINGS, NUM_FINDINGS
from unicxr.utils.errors import UnicxrError
from unicxr.utils.tensor_image import center_square, resize_square

__all__ = [
    "FallbackWarning",
    "FeatureExtractor",
    "OwnEncoderExtractor",
    "XRVDenseNetExtractor",
    "HFVisionExtractor",
    "TorchScriptExtractor",
    "parse_features_spec",
    "extract_features",
    "XRV_PATHOLOGIES",
    "map_densenet_keys",
    "load_state_dict_file",
    "center_square",
]

# Output order of torchxrayvision's "all" DenseNet-121 (xrv.datasets.default_pathologies).
XRV_PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)
# xrv name -> our finding name, where the two mean the same thing.
_XRV_TO_FINDING = {
    "Atelectasis": "Atelectasis",
    "Consolidation": "Consolidation",
    "Pneumothorax": "Pneumothorax",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Cardiomegaly": "Cardiomegaly",
    "Lung Lesion": "Lung Lesion",
    "Fracture": "Fracture",
    "Lung Opacity": "Lung Opacity",
    "Enlarged Cardiomediastinum": "Enlarged Cardiomediastinum",
}


class FallbackWarning(UserWarning):
    """A feature extractor could not read part of its configuration and used documented defaults."""


def _check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate/convert images to (B, 1, H, W) float32; 3-channel input is averaged to gray."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B, 1, H, W), got shape {tuple(x.shape)}")
    x = x.float()
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    return x


class FeatureExtractor:
    """Interface: ``extractor(images (B, 1, H, W) in [0, 1]) -> features (B, D)``.

    Attributes:
        kind: ``own``, ``xrv``, ``hf`` or ``inception``.
        name: the spec string it was built from.
        dim: feature dimension D.
        preprocessing: what is done to the images before the network (recorded in results).
        label_names: names of :meth:`probabilities` columns (the 14 findings) when available.
        warnings: fallbacks taken while loading (e.g. default preprocessing); also emitted as
            :class:`FallbackWarning` and recorded by :meth:`describe`.
    """

    kind: str = ""

    def __init__(self, name: str, device: str | torch.device = "cpu") -> None:
        self.name = name
        self.device = torch.device(device)
        self.dim = 0
        self.preprocessing: dict[str, Any] = {}
        self.label_names: tuple[str, ...] | None = None
        self.warnings: list[str] = []

    def _fallback(self, message: str) -> None:
        """Record and emit a :class:`FallbackWarning` (never a silent default)."""
        self.warnings.append(message)
        warnings.warn(message, FallbackWarning, stacklevel=3)

    # -- to implement -------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] → the network's input tensor."""
        raise NotImplementedError

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.kind} extractor {self.name!r} gives no finding probabilities")

    # -- public -------------------------------------------------------------------------------------
    @property
    def has_probabilities(self) -> bool:
        """Whether :meth:`probabilities` is available."""
        return self.label_names is not None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features (B, D) float32 on CPU of images (B, 1, H, W) in [0, 1]."""
        x = self.preprocess(_check_images(images).to(self.device))
        return self._forward_features(x).float().reshape(x.shape[0], -1).cpu()

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Finding probabilities (B, 14) in :data:`unicxr.labels.FINDINGS` order (NaN where the model has
        no such output). Raises ``NotImplementedError`` if the extractor has no classifier head."""
        x = self.preprocess(_check_images(images).to(self.device))
        return self._forward_probabilities(x).float().cpu()

    @torch.no_grad()
    def features_and_probabilities(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both outputs in one pass where possible: (B, D) features and (B, 14) probabilities or None."""
        x = self.preprocess(_check_images(images).to(self.device))
        f = self._forward_features(x)
        p = self._probabilities_from_features(f) if self.has_probabilities else None
        f = f.float().reshape(x.shape[0], -1).cpu()
        return f, (p.float().cpu() if p is not None else None)

    def _probabilities_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: kind, name, dim, preprocessing, probability labels, fallback warnings."""
        return {
            "kind": self.kind,
            "name": self.name,
            "dim": self.dim,
            "preprocessing": dict(self.preprocessing),
            "probabilities": list(self.label_names) if self.label_names is not None else None,
            "warnings": list(self.warnings),
        }

    def fingerprint(self) -> str:
        """SHA-256 of what decides the features: kind, dim, preprocessing and every tensor of the network
        (``model`` or ``net``), so that stored features are reused only with the same weights."""
        import hashlib
        import json

        h = hashlib.sha256()
        desc = {k: v for k, v in self.describe().items() if k not in ("name", "warnings")}
        desc["preprocessing"] = {k: v for k, v in desc["preprocessing"].items() if k != "model_dir"}
        h.update(json.dumps(desc, sort_keys=True, default=str).encode())
        net = getattr(self, "model", None) or getattr(self, "net", None)
        if isinstance(net, torch.nn.Module):
            for key, t in sorted(net.state_dict().items()):
                h.update(key.encode())
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


# ------------------------------------------------------------------------------------------------------
# (a) our evaluation encoder
# ------------------------------------------------------------------------------------------------------
class OwnEncoderExtractor(FeatureExtractor):
    """Our :class:`~unicxr.models.classifier.CXRClassifier`: penultimate features and its probabilities."""

    kind = "own"

    def __init__(self, path: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(name or f"own:{path}", device)
        from unicxr.models import load_model

        path = Path(path)
        if not path.exists():
            raise UnicxrError(f"{path}: evaluation encoder directory not found")
        from unicxr.models import resolve_model_dir

        model_dir = resolve_model_dir(path)
        model = load_model(model_dir, device=str(self.device))
        if not hasattr(model, "features") or not hasattr(model, "probabilities"):
            raise UnicxrError(
                f"{model_dir}: model type {model.model_type!r} is not a classifier with features()"
            )
        self.model = model.eval()
        cfg = model.config
        self.dim = int(model.feature_dim)
        self.model_dir = model_dir
        self.preprocessing = {
            "crop": "center square",
            "resize": [cfg.image_size, cfg.image_size],
            "interpolation": "bilinear (antialias)",
            "channels": 1,
            "normalize": {"mean": cfg.input_mean, "std": cfg.input_std},
            "features": "global-average-pooled trunk output (penultimate layer)",
            "model_dir": str(model_dir),
        }
        names = tuple(cfg.label_names)
        self._index = [names.index(f) if f in names else -1 for f in FINDINGS]
        self.label_names = FINDINGS if any(i >= 0 for i in self._index) else None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images  # the model resizes and normalises itself (CXRClassifier.prepare)

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def _forward_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self._probabilities_from_features(self.model.features(x))

    def _probabilities_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return _reorder(torch.sigmoid(self.model.head(feats)), self._index)


def _reorder(p: torch.Tensor, index: list[int]) -> torch.Tensor:
    out = torch.full((p.shape[0], NUM_FINDINGS), math.nan, dtype=p.dtype, device=p.device)
    for j, i in enumerate(index):
        if i >= 0:
            out[:, j] = p[:, i]
    return out


# ------------------------------------------------------------------------------------------------------
# (b) torchxrayvision-style DenseNet
# ------------------------------------------------------------------------------------------------------
_LEGACY_LAYER = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.([12])\.(.+)$")
_LAYER = re.compile(r"^(.*denselayer\d+)\.((?:norm|relu|conv)[12])\.(.+)$")


def map_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision / torchxrayvision DenseNet key names onto MONAI's ``DenseNet`` names.

    ``module.``/``model.`` prefixes are dropped; legacy ``norm.1`` becomes ``norm1``;
    ``denselayerN.norm1`` becomes ``denselayerN.layers.norm1``; ``classifier`` becomes
    ``class_layers.out``. Keys already in MONAI form pass through; non-tensor or unrelated entries
    (e.g. ``op_threshs``) are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, val in state.items():
        if not isinstance(val, torch.Tensor):
            continue
        k = key
        for prefix in ("module.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        m = _LEGACY_LAYER.match(k)
        if m:
            k = f"{m.group(1)}.{m.group(2)}{m.group(3)}.{m.group(4)}"
        m = _LAYER.match(k)
        if m and ".layers." not in k:
            k = f"{m.group(1)}.layers.{m.group(2)}.{m.group(3)}"
        if k.startswith("classifier."):
            k = "class_layers.out." + k[len("classifier.") :]
        if k.startswith("features.") or k.startswith("class_layers."):
            out[k] = val
    return out


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``.safetensors`` or a plain state-dict ``.pt/.pth`` (``weights_only=True``).

    A pickled whole model (as torchxrayvision's own downloads are) cannot be read safely; the error
    says how to convert it once.
    """
    path = Path(path)
    if not path.is_file():
        raise UnicxrError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise UnicxrError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a plain state dict"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnicxrError(
            f"{path}: not a plain state dict ({first[:120]}); if it is a pickled torchxrayvision model, convert it "
            "once where torchxrayvision is installed: safetensors.torch.save_file(model.state_dict(), 'xrv.safetensors')"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UnicxrError(f"{path}: expected a dict of tensors (a state dict)")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _densenet_shape(state: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Infer init_features, growth_rate, bn_size, block_config and classes from MONAI-named weights."""
    try:
        init = int(state["features.conv0.weight"].shape[0])
        in_ch = int(state["features.conv0.weight"].shape[1])
        conv1 = state["features.denseblock1.denselayer1.layers.conv1.weight"]
        conv2 = state["features.denseblock1.denselayer1.layers.conv2.weight"]
    except KeyError as exc:
        raise UnicxrError(f"{path}: not DenseNet weights (missing {exc.args[0]})") from None
    growth = int(conv2.shape[0])
    bn_size = int(conv1.shape[0]) // growth
    blocks = []
    b = 1
    while any(k.startswith(f"features.denseblock{b}.") for k in state):
        layers = {
            int(m.group(1))
            for k in state
            if (m := re.match(rf"features\.denseblock{b}\.denselayer(\d+)\.", k))
        }
        blocks.append(max(layers))
        b += 1
    n_classes = int(state["class_layers.out.weight"].shape[0]) if "class_layers.out.weight" in state else 0
    return {
        "init_features": init,
        "in_channels": in_ch,
        "growth_rate": growth,
        "bn_size": bn_size,
        "block_config": tuple(blocks),
        "n_classes": n_classes,
    }


class XRVDenseNetExtractor(FeatureExtractor):
    """torchxrayvision-style DenseNet (no torchvision): MONAI ``DenseNet`` + key mapping.

    Preprocessing follows torchxrayvision: centre square crop, resize to ``size`` (224), gray values
    mapped from [0, 1] to [-1024, 1024]. Features: ReLU + global average pool of the last dense block
    (1024-D for DenseNet-121). Probabilities: sigmoid of the classifier, mapped onto our findings
    (with xrv's operating-point normalisation if the file carries ``op_threshs``).
    """

    kind = "xrv"

    def __init__(
        self,
        path: str | Path,
        *,
        size: int = 224,
        name: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(name or f"xrv:{path}", device)
        from monai.networks.nets import DenseNet

        path = Path(path)
        raw = load_state_dict_file(path)
        op = raw.get("op_threshs")
        state = map_densenet_keys(raw)
        shape = _densenet_shape(state, path)
        n_out = shape["n_classes"] or 1
        net = DenseNet(
            spatial_dims=2,
            in_channels=shape["in_channels"],
            out_channels=n_out,
            init_features=shape["init_features"],
            growth_rate=shape["growth_rate"],
            block_config=shape["block_config"],
            bn_size=shape["bn_size"],
        )
        expected = net.state_dict()
        missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
        if not shape["n_classes"]:
            missing = [k for k in missing if not k.startswith("class_layers.out.")]
        unexpected = [k for k in state if k not in expected]
        bad_shape = [k for k in state if k in expected and state[k].shape != expected[k].shape]
        if missing or unexpected or bad_shape:
            what = []
            if missing:
                what.append(f"missing {len(missing)} (e.g. {missing[0]})")
            if unexpected:
                what.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
            if bad_shape:
                what.append(f"wrong shape {len(bad_shape)} (e.g. {bad_shape[0]})")
            raise UnicxrError(f"{path}: weights do not fit a DenseNet: {', '.join(what)}")
        net.load_state_dict(state, strict=False)
        self.net = net.to(self.device).eval()
        self.size = size
        self.in_channels = shape["in_channels"]
        self.dim = int(net.class_layers.out.in_features)
        self.op_threshs = op.float().to(self.device) if isinstance(op, torch.Tensor) else None
        self.preprocessing = {
            "crop": "center square",
            "resize": [size, size],
            "interpolation": "bilinear (antialias)",
            "channels": self.in_channels,
            "value_range": [-1024.0, 1024.0],
            "features": "relu + global average pool of the last dense block",
            "architecture": {k: v for k, v in shape.items() if k != "n_classes"},
        }
        self._index: list[int] = []
        if shape["n_classes"] == len(XRV_PATHOLOGIES):
            pos = {_XRV_TO_FINDING[n]: i for i, n in enumerate(XRV_PATHOLOGIES) if n in _XRV_TO_FINDING}
            self._index = [pos.get(f, -1) for f in FINDINGS]
            self.label_names = FINDINGS

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_square(images, self.size)
        x = x * 2048.0 - 1024.0
        return x.expand(-1, self.in_channels, -1, -1) if self.in_channels != 1 else x

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net.features(x)
        return F.adaptive_avg_pool2d(F.relu(h), 1).flatten(1)

    def _forward_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        if not self._index:
            raise NotImplementedError(f"{self.name}: unknown output labels, no finding probabilities")
        return self._probabilities_from_features(self._forward_features(x))

    def _probabilities_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.net.class_layers.out(feats))
        if self.op_threshs is not None and self.op_threshs.numel() == p.shape[1]:
            # Piecewise-linear recalibration putting each output's operating point at 0.5.
            t = self.op_threshs.expand_as(p)
            low = p < t
            p = torch.where(low, p / (2 * t), 1.0 - (1.0 - p) / (2 * (1.0 - t)))
        return _reorder(p, self._index)


# ------------------------------------------------------------------------------------------------------
# (c) local Hugging Face vision models
# ------------------------------------------------------------------------------------------------------
def _hw(size: Any, default: int) -> tuple[str, tuple[int, int] | int]:
    """Interpret an HF image-processor ``size``/``crop_size`` entry → ("shortest_edge", s) or ("hw", (h, w))."""
    if size is None:
        return "hw", (default, default)
    if isinstance(size, int):
        return "hw", (size, size)
    get = size.get if isinstance(size, dict) else (lambda k, d=None: getattr(size, k, d))
    if get("shortest_edge") is not None:
        return "shortest_edge", int(get("shortest_edge"))
    if get("height") is not None and get("width") is not None:
        return "hw", (int(get("height")), int(get("width")))
    return "hw", (default, default)


class HFVisionExtractor(FeatureExtractor):
    """Any local Hugging Face vision model directory (``AutoModel`` + ``AutoImageProcessor``).

    Pooling: CLIP/SigLIP-style models (with ``get_image_features``) give their image embedding;
    vision-only CLIP/SigLIP towers their pooled output; ViT/DINOv2/RAD-DINO the CLS token of the last
    hidden state; CNNs their pooled output. Preprocessing reproduces the processor's resize, centre
    crop and normalisation in torch (bicubic, antialiased), gray replicated to the model's channels.
    """

    kind = "hf"

    def __init__(self, path: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(name or f"hf:{path}", device)
        path = Path(path)
        if not (path / "config.json").is_file():
            raise UnicxrError(f"{path}: not a Hugging Face model directory (no config.json)")
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        transformers.logging.set_verbosity_error()
        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise UnicxrError(
                f"{path}: cannot load with transformers AutoModel ({str(exc).splitlines()[0]})"
            ) from None
        proc_error = ""
        try:
            proc = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            proc = None
            proc_error = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        self.model = model.to(self.device).eval()
        vcfg = getattr(config, "vision_config", None) or config
        default = int(getattr(vcfg, "image_size", 224) or 224)
        self.channels = int(getattr(vcfg, "num_channels", 3) or 3)
        self.resize_rule = _hw(getattr(proc, "size", None), default)
        do_crop = bool(getattr(proc, "do_center_crop", False))
        self.crop = _hw(getattr(proc, "crop_size", None), default)[1] if do_crop else None
        if proc is None or getattr(proc, "do_normalize", True):
            mean = getattr(proc, "image_mean", None) or [0.5] * self.channels
            std = getattr(proc, "image_std", None) or [0.5] * self.channels
        else:
            mean, std = [0.0] * self.channels, [1.0] * self.channels
        if proc is None:
            self._fallback(
                f"{path}: no image processor could be loaded ({proc_error or 'none found'}); using defaults: "
                f"resize to {default}x{default} (the model's image_size), no centre crop, mean = std = 0.5"
            )
        else:
            wanted = ("size", "image_mean", "image_std") if getattr(proc, "do_normalize", True) else ("size",)
            missing = [k for k in wanted if getattr(proc, k, None) is None]
            if missing:
                self._fallback(
                    f"{path}: image processor {type(proc).__name__} has no {', '.join(missing)}; using defaults "
                    f"(size {default}, mean = std = 0.5)"
                )
        mean = list(mean) if isinstance(mean, (list, tuple)) else [float(mean)] * self.channels
        std = list(std) if isinstance(std, (list, tuple)) else [float(std)] * self.channels
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mtype = getattr(config, "model_type", "")
        if hasattr(model, "get_image_features"):
            self.pooling = "image embedding (get_image_features)"
        elif mtype.endswith("vision_model"):
            self.pooling = "pooler_output"
        else:
            self.pooling = "cls"  # refined to 'pooler_output' for CNN-style outputs at first call
        with torch.no_grad():
            probe = self._forward_features(
                self.preprocess(torch.full((1, 1, 64, 64), 0.5, device=self.device))
            )
        self.dim = int(probe.reshape(1, -1).shape[1])
        self.preprocessing = {
            "resize": {"rule": self.resize_rule[0], "size": self.resize_rule[1]},
            "center_crop": list(self.crop) if self.crop else None,
            "interpolation": "bicubic (antialias)",
            "channels": self.channels,
            "normalize": {"mean": mean, "std": std},
            "model_type": mtype,
            "pooling": self.pooling,
            "model_dir": str(path),
            "image_processor": type(proc).__name__ if proc is not None else f"defaults ({proc_error or 'none found'})",
        }

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        rule, val = self.resize_rule
        h, w = x.shape[-2:]
        if rule == "shortest_edge":
            s = int(val)
            size = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
        else:
            size = val  # type: ignore[assignment]
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True).clamp(
            0, 1
        )
        if self.crop is not None:
            ch, cw = self.crop
            top, left = max(0, (x.shape[-2] - ch) // 2), max(0, (x.shape[-1] - cw) // 2)
            x = x[..., top : top + ch, left : left + cw]
        x = x.expand(-1, self.channels, -1, -1)
        return (x - self.mean) / self.std

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling.startswith("image embedding"):
            out = self.model.get_image_features(pixel_values=x)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = self.model(pixel_values=x)
        if self.pooling == "pooler_output":
            return out.pooler_output.flatten(1)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is not None and hidden.ndim == 3:
            return hidden[:, 0]
        self.pooling = "pooler_output"
        return out.pooler_output.flatten(1)


# ------------------------------------------------------------------------------------------------------
# (d) Inception-v3 (or any network) as TorchScript / torch.export
# ------------------------------------------------------------------------------------------------------
_RANGES = {"01": (0.0, 1.0), "pm1": (-1.0, 1.0), "255": (0.0, 255.0)}


class TorchScriptExtractor(FeatureExtractor):
    """An exported network (TorchScript ``.pt`` or ``torch.export`` ``.pt2``) mapping (B, 3, S, S) → (B, D).

    For FID-style Inception-v3 features export the pool3 (2048-D) network once; pass ``range=255`` if
    it expects 0..255 input (torch-fidelity) or ``range=01`` if it normalises internally (pytorch-fid).
    """

    kind = "inception"

    def __init__(
        self,
        path: str | Path,
        *,
        size: int = 299,
        value_range: str = "01",
        name: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(name or f"inception:{path}", device)
        path = Path(path)
        if not path.is_file():
            raise UnicxrError(f"{path}: network file not found")
        if value_range not in _RANGES:
            raise UnicxrError(f"{self.name}: range must be one of {', '.join(_RANGES)}, got {value_range!r}")
        try:
            if path.suffix == ".pt2":
                self.net = torch.export.load(str(path)).module()
            else:
                self.net = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as exc:  # noqa: BLE001 - report any loader failure as a user error
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UnicxrError(
                f"{path}: not a TorchScript (.pt) or torch.export (.pt2) file ({first[:160]})"
            ) from None
        self.size = size
        self.value_range = value_range
        with torch.no_grad():
            probe = self._forward_features(
                self.preprocess(torch.full((1, 1, 32, 32), 0.5, device=self.device))
            )
        self.dim = int(probe.reshape(1, -1).shape[1])
        lo, hi = _RANGES[value_range]
        self.preprocessing = {
            "crop": "center square",
            "resize": [size, size],
            "interpolation": "bilinear (antialias)",
            "channels": 3,
            "value_range": [lo, hi],
            "file": str(path),
        }

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        lo, hi = _RANGES[self.value_range]
        x = resize_square(images, self.size).clamp(0, 1)
        return (lo + (hi - lo) * x).expand(-1, 3, -1, -1).contiguous()

    def _forward_features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(out.shape[0], -1)


# ------------------------------------------------------------------------------------------------------
# spec parsing and batch extraction
# ------------------------------------------------------------------------------------------------------
def _split_options(rest: str, spec: str) -> tuple[str, dict[str, str]]:
    if "?" not in rest:
        return rest, {}
    path, query = rest.rsplit("?", 1)
    opts: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        if "=" not in part:
            raise UnicxrError(f"--features {spec!r}: option {part!r} must be KEY=VALUE")
        k, v = part.split("=", 1)
        opts[k.strip()] = v.strip()
    return path, opts


def parse_features_spec(spec: str, *, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Build a :class:`FeatureExtractor` from ``own:DIR``, ``xrv:FILE``, ``hf:DIR`` or ``inception:FILE``."""
    if ":" not in spec:
        raise UnicxrError(f"--features {spec!r}: expected KIND:PATH with KIND one of own, xrv, hf, inception")
    kind, rest = spec.split(":", 1)
    kind = kind.strip().lower()
    path, opts = _split_options(rest, spec)
    if not path:
        raise UnicxrError(f"--features {spec!r}: missing path after '{kind}:'")

    def _int(key: str, default: int) -> int:
        try:
            return int(opts.pop(key, default))
        except ValueError:
            raise UnicxrError(f"--features {spec!r}: {key} must be an integer") from None

    if kind == "own":
        ext: FeatureExtractor = OwnEncoderExtractor(path, name=spec, device=device)
    elif kind == "xrv":
        ext = XRVDenseNetExtractor(path, size=_int("size", 224), name=spec, device=device)
    elif kind == "hf":
        ext = HFVisionExtractor(path, name=spec, device=device)
    elif kind in ("inception", "torchscript"):
        ext = TorchScriptExtractor(
            path, size=_int("size", 299), value_range=opts.pop("range", "01"), name=spec, device=device
        )
    else:
        raise UnicxrError(f"--features {spec!r}: unknown kind {kind!r} (expected own, xrv, hf or inception)")
    if opts:
        raise UnicxrError(f"--features {spec!r}: unknown option(s) {', '.join(sorted(opts))}")
    return ext


def _batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for s in range(0, images.shape[0], batch_size):
            yield images[s : s + batch_size]
        return
    buf: list[torch.Tensor] = []
    if hasattr(images, "__getitem__") and hasattr(images, "__len__"):
        items: Iterable[Any] = (images[i] for i in range(len(images)))  # type: ignore[index, arg-type]
    else:
        items = images
    for item in items:
        img = item["image"] if isinstance(item, dict) else item
        img = torch.as_tensor(img)
        if img.ndim == 4:  # already a batch
            yield img
            continue
        buf.append(img)
        if len(buf) == batch_size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)


def extract_features(
    extractor: FeatureExtractor,
    images: torch.Tensor | Iterable[Any],
    *,
    batch_size: int = 32,
    probabilities: bool = False,
    progress: bool = True,
    desc: str = "features",
    total: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``extractor`` over images: a tensor (N, 1, H, W), or an iterable of (1, H, W) tensors / dicts
    with an ``"image"`` entry (e.g. a ``CXRCache``), or of (B, 1, H, W) batches.

    Returns (features (N, D) float32, probabilities (N, 14) float32 or None).
    """
    from tqdm.auto import tqdm

    if total is None:
        try:
            total = len(images)  # type: ignore[arg-type]
        except TypeError:
            total = None
    feats: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    want_p = probabilities and extractor.has_probabilities
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in _batches(images, batch_size):
            if want_p:
                f_b, p_b = extractor.features_and_probabilities(batch)
                probs.append(p_b.numpy())  # type: ignore[union-attr]
            else:
                f_b = extractor(batch)
            feats.append(f_b.numpy())
            bar.update(batch.shape[0])
    if not feats:
        raise UnicxrError(f"{desc}: no images")
    f = np.concatenate(feats).astype(np.float32)
    p = np.concatenate(probs).astype(np.float32) if want_p else None
    return f, p
