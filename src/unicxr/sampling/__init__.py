"""Sampling: timestep embeddings, rectified-flow and diffusion schedules, ODE samplers, guidance, and
autoregressive decoding (:mod:`unicxr.sampling.decoding`: greedy, beam, nucleus).

One implementation shared by every generator family (LDM-UNet, latent DiT, CrossFlow) and the unified
model. MONAI's DDPM/DDIM/PNDM/RFlow schedulers are wrapped (:mod:`unicxr.sampling.diffusion`), not
rewritten; rectified flow (:mod:`unicxr.sampling.flow`) follows x_t = (1 − t)·x0 + t·ε with velocity
ε − x0, integrated from t = 1 (noise or a source latent) to t = 0 (data).
"""

from __future__ import annotations

from unicxr.sampling.flow import (
    FLOW_SAMPLERS,
    flow_interpolate,
    flow_sample,
    flow_target,
    sample_flow_t,
    shift_t,
    time_grid,
)
from unicxr.sampling.guidance import (
    APG_OFF,
    apg_combine,
    cfg_combine,
    cfg_rescale,
    drop_condition,
    guided,
    in_interval,
    parse_apg,
    parse_interval,
)
from unicxr.sampling.timestep import TimestepEmbedder, timestep_embedding

__all__ = [
    "APG_OFF",
    "FLOW_SAMPLERS",
    "TimestepEmbedder",
    "apg_combine",
    "cfg_combine",
    "cfg_rescale",
    "drop_condition",
    "flow_interpolate",
    "flow_sample",
    "flow_target",
    "guided",
    "in_interval",
    "parse_apg",
    "parse_interval",
    "sample_flow_t",
    "shift_t",
    "time_grid",
    "timestep_embedding",
]
