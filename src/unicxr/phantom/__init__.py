"""Procedural chest X-ray simulator ("phantom"): radiographs with ground-truth labels, masks and reports.

Images are built in the attenuation domain (thickness maps of soft tissue, lung air, heart,
bones, fluid and metal -> exponential attenuation -> scatter, noise, detector processing).
"""

from __future__ import annotations

from unicxr.phantom.config import DEFAULT_PREVALENCE, PhantomConfig, parse_prevalence
from unicxr.phantom.simulate import MASK_NAMES, CasePlan, PhantomCase, make_plan, render_case, simulate

__all__ = [
    "simulate",
    "render_case",
    "make_plan",
    "PhantomCase",
    "CasePlan",
    "PhantomConfig",
    "DEFAULT_PREVALENCE",
    "parse_prevalence",
    "MASK_NAMES",
    "write_dataset",
]


def __getattr__(name: str):  # lazy: the writer pulls in multiprocessing/PIL
    if name == "write_dataset":
        from unicxr.phantom.writer import write_dataset

        return write_dataset
    raise AttributeError(name)
