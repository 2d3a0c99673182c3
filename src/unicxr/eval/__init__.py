"""Evaluation: image metrics (FD/KID/PRDC/MMD/MS-SSIM), feature extractors, alignment, report metrics.

Submodules are imported explicitly (``unicxr.eval.image_metrics``, ``unicxr.eval.features``, ...);
this package imports nothing so that light modules stay light.
"""
