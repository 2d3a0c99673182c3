"""``unicxr generate``: sample synthetic CXRs from a trained generator run."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]


def generate_command(
    model: Path = typer.Option(..., "--model", help="Generator run folder (model_ema/ or model/) or model dir."),
    prompt: str = typer.Option(None, "--prompt", help="Report text to draw (labels of the condition: the labeler's)."),
    findings: str = typer.Option(
        None, "--findings", help='Findings list, e.g. "Cardiomegaly, left Pleural Effusion, no Pneumothorax".'
    ),
    prompts: Path = typer.Option(None, "--prompts", help="CSV (prompt/report/text column) or a cache: one image per row."),
    split: str = typer.Option(None, "--split", help="With --prompts: only this split."),
    n: int = typer.Option(1, "--n", min=1, help="Images per prompt."),
    steps: int = typer.Option(None, "--steps", min=1, help="Sampling steps (default: the model's)."),
    sampler: str = typer.Option(None, "--sampler", help="euler|heun|monai_rflow (flow models), ddpm|ddim|pndm (LDM-UNet)."),
    guidance: float = typer.Option(None, "--guidance", min=0.0, help="Classifier-free guidance scale (1: none)."),
    side_guidance: float = typer.Option(
        0.0, "--side-guidance", min=0.0,
        help="Left/right guidance S: add S x (prompt - the prompt with left and right swapped) to the guided "
        "output, so a finding's side is pushed apart from its mirror (one more network pass per step; "
        "LDM-UNet and latent DiT). 0: off."),
    finding_guidance: float = typer.Option(
        0.0, "--finding-guidance", min=0.0,
        help="Finding guidance F: add F x (prompt - the prompt with its present and uncertain findings set "
        "absent) to the guided output, pushing each prompted finding further than classifier-free guidance "
        "alone (the findings path changes, the report text stays; one more network pass per step; LDM-UNet "
        "and latent DiT). 0: off."),
    negative: str = typer.Option(
        None, "--negative", help='Negative findings, e.g. "Support Devices, Pneumothorax": the other branch of '
        "classifier-free guidance is conditioned on them instead of the null condition, so images move away "
        "from them (LDM-UNet and latent DiT)."),
    guidance_rescale: float = typer.Option(
        0.0, "--guidance-rescale", min=0.0, max=1.0,
        help="Guidance rescale PHI in [0, 1]: bring the guided prediction's spread back to the conditional "
        "one's and mix PHI of that in (Lin et al. 2024); against blown-out, over-saturated images at large "
        "--guidance (LDM-UNet and latent DiT). 0: off."),
    guidance_interval: str = typer.Option(
        None, "--guidance-interval",
        help='Guidance interval "LO,HI": apply guidance only at noise levels in [LO, HI], 1 = pure noise, '
        "0 = clean (Kynkaanniemi et al. 2024); other steps run the conditional branch alone, one pass "
        "(LDM-UNet and latent DiT). Default: every step."),
    apg: str = typer.Option(
        None, "--apg",
        help='Adaptive projected guidance "ETA" or "ETA,R" (Sadat et al. 2024): in the denoised image, the '
        "guidance term's part along the conditional estimate (what over-saturates at large --guidance) is "
        "weighted ETA (0: removed; 1 with no R: plain guidance) and the term is cut to norm R (0 or none: no "
        "cut); same passes (LDM-UNet and latent DiT). \"off\": plain guidance. Default: the model's "
        "default_apg (plain guidance when it has none)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Image i starts from noise seeded with seed + i."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (images/, metadata.csv, rejects.csv)."),
    resume: bool = typer.Option(
        False, "--resume", help="Keep the batches an interrupted run into the same --out already wrote (same prompts, "
        "seeds, model and sampling options, read from each PNG's text); sample the rest. Same bytes as one run."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Draw synthetic chest X-rays (research artefacts: every PNG carries synthetic=true).

    Output: OUT/images/*.png (tEXt: synthetic, prompt, seed, steps, sampler, guidance, model) and
    OUT/metadata.csv (image_path, prompt, the 14 label columns of the condition, seed): exactly what
    `unicxr eval images --fake OUT` reads. Same arguments and seed give the same bytes.
    """
    import json

    from unicxr.pipelines.generate import generate_images, read_prompts
    from unicxr.sampling import parse_apg, parse_interval
    from unicxr.utils.errors import UnicxrError

    try:
        interval = parse_interval(guidance_interval)
    except ValueError as exc:
        raise UnicxrError(f"--guidance-interval: {exc}") from None
    try:
        apg_eta_r = parse_apg(apg)
    except ValueError as exc:
        raise UnicxrError(f"--apg: {exc}") from None
    items, rejects = read_prompts(prompt, findings, prompts, split)
    summary = generate_images(model, items, out, n=n, steps=steps, sampler=sampler, guidance=guidance, seed=seed,
                              batch_size=batch_size, rejects=rejects, progress=progress, side_guidance=side_guidance,
                              finding_guidance=finding_guidance, negative=negative,
                              guidance_rescale=guidance_rescale, guidance_interval=interval, apg=apg_eta_r,
                              resume=resume)
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> list[str]:
    app.command("generate")(generate_command)
    return []
