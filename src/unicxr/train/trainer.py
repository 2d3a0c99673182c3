"""The one training loop of unicxr (Accelerate underneath).

Features: gradient accumulation, clipping, warmup + cosine/linear LR, several optimizers (e.g. a
generator and a discriminator, with a delayed start), EMA of trainable weights, mixed precision (bf16
on GPU, fp32 on CPU), progress bar with loss and img/s, TensorBoard scalars + ``log.jsonl``, media
(image grids, generated text) at evaluation steps, periodic and final checkpoints with ``keep_last``
rotation, validation, and exact resume: data order, augmentation and loss noise are pure functions of
(seed, step, rank, micro-batch, optimizer), so restarting from a checkpoint replays exactly what an
uninterrupted run would have done (bit-identical on CPU).

Multi-process: run the same command under ``torchrun --nproc_per_node 2 --no-python unicxr train ...``
or ``accelerate launch --multi_gpu --num_processes 2 -m unicxr.cli train ...`` (gloo on CPU); the global batch
(``train.batch_size``) is split across ranks and accumulation micro-batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from unicxr.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)
from unicxr.train.config import LoadedRecipe
from unicxr.train.ema import EMA
from unicxr.train.sampler import StepBatchSampler
from unicxr.train.schedule import lr_at
from unicxr.train.tasks import Media, Task, get_task
from unicxr.utils.errors import UnicxrError
from unicxr.utils.io import atomic_write_text

__all__ = ["train", "derive_seed", "resolve_mixed_precision", "param_digest"]

_M = (1 << 63) - 1


def derive_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (seed, step, rank, micro, stream)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x9E3779B97F4A7C15 + ((h << 6) & _M) + (h >> 2))) & _M
        h = (h * 0xBF58476D1CE4E5B9) & _M
    return h


def resolve_mixed_precision(flag: str) -> str:
    """``auto`` → ``bf16`` on a bf16-capable GPU, else ``no`` (fp32)."""
    if flag != "auto":
        if flag in {"bf16", "fp16"} and not torch.cuda.is_available():
            return "no"
        return flag
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_len(batch: dict[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return int(v.shape[0])
        if isinstance(v, (list, tuple)):
            return len(v)
    return 0


def _trim_log(path: Path, max_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be replayed)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def param_digest(model: torch.nn.Module) -> str:
    """SHA-256 over a model's parameters and buffers (names + raw bytes), for cross-rank checks."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _repeat_factors(dataset: Any, cfg: Any, task_name: str) -> Any:
    """Repeat factors (N,) of the training set from its ``labels`` (N, 14) and ``cfg.repeat_threshold`` /
    ``cfg.repeat_findings``; error if it has no labels."""
    import numpy as np

    from unicxr.labels import FINDINGS
    from unicxr.train.sampler import repeat_factors

    option = "train.repeat_threshold" if cfg.repeat_threshold is not None else "train.repeat_findings"
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise UnicxrError(f"{option}: the training set of task {task_name} carries no finding labels")
    labels = np.asarray(labels)[: len(dataset)]
    if len(labels) != len(dataset):
        raise UnicxrError(f"{option}: {len(labels)} label rows for {len(dataset)} training items")
    by_finding = {FINDINGS.index(name): factor for name, factor in cfg.repeat_findings.items()}
    return repeat_factors(labels, cfg.repeat_threshold, by_finding)


def _build_optimizer(spec: Any, cfg: Any) -> torch.optim.Optimizer:
    """AdamW for one :class:`~unicxr.train.tasks.OptimizerSpec` (frozen parameters dropped)."""
    groups: list[dict[str, Any]] = []
    plain: list[torch.nn.Parameter] = []
    for item in spec.params:
        if isinstance(item, dict):
            ps = [p for p in item["params"] if p.requires_grad]
            if ps:
                groups.append({**item, "params": ps})
        elif item.requires_grad:
            plain.append(item)
    if plain:
        groups.insert(0, {"params": plain})
    if not groups:
        raise UnicxrError(f"optimizer {spec.name!r}: no trainable parameters")
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=spec.betas or cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay if spec.weight_decay is None else spec.weight_decay,
    )


def _save_weights(folder: Path, model: Any, ema: Any) -> None:
    """``folder/model/`` (the live weights) and, with an EMA, ``folder/model_ema/`` (its averaged ones)."""
    model.save_pretrained(folder / "model")
    if ema is not None:
        with ema.swapped(model):
            model.save_pretrained(folder / "model_ema")


def _snap_name(minutes: float) -> str:
    return f"min{minutes:g}"


def _save_snapshot(out: Path, minutes: float, step: int, seconds: float, model: Any, ema: Any, main: bool) -> None:
    """``train.snapshot_minutes``: the weights after ``step`` (and their EMA) as a run-like folder
    ``OUT/snapshots/min<M>/`` (``model/``, ``model_ema/``, ``snapshot.json``), written on the main rank only
    (no collective, so ranks whose clocks differ cannot deadlock); the folder appears whole or not at all."""
    if not main:
        return
    import shutil

    final = out / "snapshots" / _snap_name(minutes)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _save_weights(tmp, model, ema)
    rec = {"minutes": minutes, "step": step, "seconds": seconds}
    (tmp / "snapshot.json").write_text(json.dumps(rec, indent=2) + "\n")
    tmp.rename(final)


def _write_media(out: Path, step: int, media: Media, writer: Any, task: Task) -> None:
    """Write a task's media: ``RUN/media/step_N/<name>.png`` grids and ``<name>.txt`` texts, and TensorBoard."""
    from unicxr.utils.io import atomic_write_text as write_text
    from unicxr.utils.media import image_grid, save_png

    folder = out / "media" / f"step_{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, images in media.images.items():
        grid = image_grid(images.detach().float().cpu())
        save_png(folder / f"{name}.png", grid, {"step": str(step), "task": task.name},
                 synthetic=media.synthetic, source=f"training media of task {task.name}")
        if writer is not None:
            writer.add_image(f"media/{name}", grid[None], step, dataformats="CHW")
    for name, text in media.texts.items():
        write_text(folder / f"{name}.txt", text if text.endswith("\n") else text + "\n")
        if writer is not None:
            writer.add_text(f"media/{name}", text, step)


def train(
    loaded: LoadedRecipe,
    out: str | Path,
    *,
    resume: bool = True,
    resume_from: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Train the recipe's task into run folder ``out``; resume from its newest checkpoint if any.

    Returns the folder of the final model (``out/model``; EMA weights in ``out/model_ema``).
    """
    from accelerate import Accelerator

    out = Path(out)
    cfg = loaded.recipe.train
    task = get_task(loaded.recipe.task)(loaded.model_cfg, loaded.data_cfg)
    # cpu=True lets Accelerate set up gloo DDP when launched with several CPU processes.
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available()
    )
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    device = accelerator.device

    if main:
        out.mkdir(parents=True, exist_ok=True)
        recipe_text = yaml.safe_dump(loaded.raw, sort_keys=False)
        rpath = out / "recipe.yaml"
        if rpath.exists() and rpath.read_text(encoding="utf-8") != recipe_text:
            accelerator.print(f"warning: {rpath} differs from the recipe given now; the new one is used")
        atomic_write_text(rpath, recipe_text)
    accelerator.wait_for_everyone()

    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    ckpt: Path | None = Path(resume_from) if resume_from else (latest_checkpoint(out) if resume else None)
    init_dir = None
    if cfg.init_from:
        from unicxr.train.init_from import resolve_init_dir

        init_dir = resolve_init_dir(cfg.init_from)
        task.init_from = init_dir  # components (tokenizer, autoencoder) may come from there
    task.run_dir, task.progress = out, progress and main
    torch.manual_seed(cfg.seed)
    model = task.build_model()
    if init_dir is not None and ckpt is None:
        from unicxr.train.init_from import load_init_weights

        info = load_init_weights(model, init_dir)
        accelerator.print(
            f"init_from {init_dir}: loaded {info['loaded']} tensors; missing {len(info['missing'])}"
            + (f" (e.g. {', '.join(info['missing'][:4])})" if info["missing"] else "")
            + f"; unexpected {len(info['unexpected'])}"
            + (f" (e.g. {', '.join(info['unexpected'][:4])})" if info["unexpected"] else "")
        )
        if main:
            atomic_write_text(out / "init_from.json", json.dumps(info, indent=2) + "\n")
    aux = task.build_modules(model)
    if "model" in aux:
        raise UnicxrError(f"task {task.name}: build_modules may not use the name 'model'")
    names = ["model", *aux]
    train_ds, val_ds = task.build_datasets(cfg.seed)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay is not None else None
    specs = task.configure_optimizers({"model": model, **aux}, cfg)
    if not specs or len({sp.name for sp in specs}) != len(specs):
        raise UnicxrError(f"task {task.name}: configure_optimizers must return optimizers with distinct names")
    optimizers = [_build_optimizer(sp, cfg) for sp in specs]

    start_step = 0
    if ckpt is not None:
        try:
            state = load_checkpoint(
                ckpt, {"model": model, **aux}, {sp.name: o for sp, o in zip(specs, optimizers, strict=True)}, ema
            )
        except UnicxrError as exc:
            older = [p for _, p in list_checkpoints(out) if p != ckpt]
            hint = f"; the previous checkpoint {older[-1]} may be intact: rerun with --resume-from {older[-1]}" if older else ""
            raise UnicxrError(f"cannot resume: {exc}{hint}") from None
        start_step = int(state["step"])
        if ema is not None:
            ema.num_updates = int(state.get("ema_updates", start_step))
        accelerator.print(f"resuming from {ckpt} (step {start_step})")

    prepared = accelerator.prepare(*[model, *aux.values()], *optimizers)
    wrapped = dict(zip(names, prepared[: len(names)], strict=True))
    optimizers = list(prepared[len(names) :])
    task.accelerator = accelerator
    if ema is not None:
        ema.to(device)
    raw_model = accelerator.unwrap_model(wrapped["model"])
    raw_modules = {n: accelerator.unwrap_model(m) for n, m in wrapped.items()}

    repeat = None
    if cfg.repeat_threshold is not None or cfg.repeat_findings:
        repeat = _repeat_factors(train_ds, cfg, task.name)
        rule = ", ".join([*([f"t = {cfg.repeat_threshold}"] if cfg.repeat_threshold is not None else []),
                          *(f"{k} x{v:g}" for k, v in cfg.repeat_findings.items())])
        accelerator.print(
            f"repeat-factor sampling ({rule}): {int((repeat > 1).sum())} of {len(repeat)} images "
            f"repeated, {repeat.sum():.0f} items per epoch on average (max factor {repeat.max():.2f})"
        )
    sampler = StepBatchSampler(
        len(train_ds),
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        world_size=world,
        rank=rank,
        seed=cfg.seed,
        start_step=start_step,
        max_steps=cfg.max_steps,
        repeat=repeat,
    )
    loader = DataLoader(
        train_ds,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=task.collate,
        persistent_workers=cfg.num_workers > 0,
    )

    log_path = out / "log.jsonl"
    writer = None
    if main:
        _trim_log(log_path, start_step)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                writer = None
    idx_log = out / f"indices_rank{rank}.jsonl" if cfg.record_indices else None

    def run_eval(step: int) -> None:
        if not main:
            return
        swap = ema.swapped(raw_model) if ema is not None else contextlib.nullcontext(raw_model)
        with swap as net:
            was_training = net.training
            net.eval()
            with torch.no_grad(), accelerator.autocast():
                metrics = task.evaluate(net, val_ds) if val_ds is not None else {}
                media = task.log_media(net, val_ds, step)
            net.train(was_training)
        if metrics:
            _append_jsonl(out / "eval.jsonl", {"step": step, **metrics})
            if writer is not None:
                for k, v in metrics.items():
                    writer.add_scalar(f"val/{k}", v, step)
            accelerator.print(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if media is not None:
            _write_media(out, step, media, writer, task)

    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=start_step, unit="step", dynamic_ncols=True, desc="train")

    ddp_modules = [m for m in wrapped.values() if m is not accelerator.unwrap_model(m)]
    it = iter(loader)
    window_loss = torch.zeros((), device=device)
    window_n = 0
    window_items = 0
    t0 = time.perf_counter()
    last_loss = float("nan")
    t_start = time.perf_counter()
    end_step = cfg.max_steps  # < max_steps when train.max_minutes stops the run early
    # wall-clock marks not yet snapshotted (a resumed run restarts its clock, so it skips existing ones)
    pending_snaps = sorted(m for m in cfg.snapshot_minutes if not (out / "snapshots" / _snap_name(m)).exists())
    for step in range(start_step, cfg.max_steps):
        lr = lr_at(
            step,
            lr=cfg.lr,
            max_steps=cfg.max_steps,
            warmup_steps=cfg.warmup_steps,
            schedule=cfg.lr_schedule,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        for sp, opt in zip(specs, optimizers, strict=True):
            for group in opt.param_groups:
                group["lr"] = lr * sp.lr_scale * group.get("lr_scale", 1.0)
        for m in wrapped.values():
            m.train()
        batches = []
        for micro in range(cfg.grad_accum):
            batch = next(it)
            if idx_log is not None:
                ids = batch["index"].tolist() if "index" in batch else sampler.indices_for(step, micro)
                _append_jsonl(idx_log, {"step": step, "micro": micro, "rank": rank, "indices": ids})
            window_items += _batch_len(batch) * world
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step, rank, micro, 1))
            batches.append(_to_device(task.augment(batch, gen), device))
        ctxs: list[dict[str, Any]] = [{} for _ in batches]
        step_loss = torch.zeros((), device=device)
        extras: dict[str, float] = {}
        grad_norms: dict[str, float] = {}
        for k, (sp, opt) in enumerate(zip(specs, optimizers, strict=True)):
            if step < sp.start_step:
                continue
            for m in wrapped.values():
                m.zero_grad(set_to_none=True)
            for micro, batch in enumerate(batches):
                torch.manual_seed(derive_seed(cfg.seed, step, rank, micro, 2 + k))
                last = micro == cfg.grad_accum - 1
                with contextlib.ExitStack() as stack:
                    if not last:
                        for m in ddp_modules:
                            stack.enter_context(accelerator.no_sync(m))
                    with accelerator.autocast():
                        loss, extra = task.training_loss(sp.name, wrapped, batch, ctxs[micro], step)
                    if not torch.isfinite(loss.detach()):
                        raise UnicxrError(
                            f"train: loss ({sp.name}) is {loss.item()} at step {step} (rank {rank}); "
                            "lower train.lr or check the data"
                        )
                    accelerator.backward(loss / cfg.grad_accum)
                if k == 0:
                    step_loss += loss.detach().float() / cfg.grad_accum
                else:
                    key = f"loss_{sp.name}"
                    extras[key] = extras.get(key, 0.0) + float(loss.detach()) / cfg.grad_accum
                for key, v in extra.items():
                    extras[key] = extras.get(key, 0.0) + float(v) / cfg.grad_accum
            if cfg.clip_grad is not None:
                params = [p for g in opt.param_groups for p in g["params"]]
                grad_norms[sp.name] = float(accelerator.clip_grad_norm_(params, cfg.clip_grad))
                # the step would write nan into every weight; under fp16 the grad scaler skips such steps itself
                if not math.isfinite(grad_norms[sp.name]) and accelerator.mixed_precision != "fp16":
                    raise UnicxrError(
                        f"train: gradient norm ({sp.name}) is {grad_norms[sp.name]} at step {step} (rank {rank}) "
                        "with a finite loss: a loss term has an undefined gradient there; lower train.lr or "
                        "check the loss terms"
                    )
            opt.step()
        for m in wrapped.values():
            m.zero_grad(set_to_none=True)
        if ema is not None:
            if task.restarts_ema(step):
                ema.restart(raw_model)
            else:
                ema.update(raw_model)
        done = step + 1
        window_loss += step_loss
        window_n += 1

        if done % cfg.log_every == 0 or done == cfg.max_steps:
            mean_loss = accelerator.reduce(window_loss / window_n, reduction="mean")
            last_loss = float(mean_loss)
            dt = max(time.perf_counter() - t0, 1e-9)
            rec = {"step": done, "loss": last_loss, "lr": lr, "img_per_s": window_items / dt, **extras}
            for name, gn in grad_norms.items():
                rec["grad_norm" if name == specs[0].name else f"grad_norm_{name}"] = gn
            if main:
                _append_jsonl(log_path, rec)
                if writer is not None:
                    for key, v in rec.items():
                        if key != "step":
                            writer.add_scalar(f"train/{key}", v, done)
                if bar is not None:
                    bar.set_postfix(loss=f"{last_loss:.4g}", lr=f"{lr:.2e}", img_s=f"{rec['img_per_s']:.1f}")
            window_loss.zero_()
            window_n = 0
            window_items = 0
            t0 = time.perf_counter()
        if bar is not None:
            bar.update(1)

        while pending_snaps and time.perf_counter() - t_start >= 60.0 * pending_snaps[0]:
            _save_snapshot(out, pending_snaps.pop(0), done, time.perf_counter() - t_start, raw_model, ema, main)
        if cfg.max_minutes is not None and done < cfg.max_steps:
            over = torch.tensor(float(time.perf_counter() - t_start > 60.0 * cfg.max_minutes), device=device)
            if float(accelerator.reduce(over, reduction="sum")) > 0:  # every rank stops at the same step
                end_step = done
        if done % cfg.ckpt_every == 0 or done == cfg.max_steps or end_step == done:
            accelerator.wait_for_everyone()
            if main:
                save_checkpoint(
                    out,
                    done,
                    raw_modules,
                    {sp.name: getattr(o, "optimizer", o) for sp, o in zip(specs, optimizers, strict=True)},
                    ema,
                    extra={"ema_updates": ema.num_updates if ema else 0, "world_size": world},
                )
                rotate_checkpoints(out, cfg.keep_last)
            accelerator.wait_for_everyone()
        if end_step == done < cfg.max_steps:
            accelerator.print(f"train.max_minutes ({cfg.max_minutes}) reached: stopping at step {done}")
            break
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.max_steps:
            run_eval(done)
    if bar is not None:
        bar.close()

    if start_step < end_step or not (out / "model").exists():
        run_eval(end_step)
    # Ranks must end with the same weights; record each rank's digest so a desync is visible.
    from accelerate.utils import gather_object

    digests = gather_object([param_digest(raw_model)])
    if main and len(set(digests)) > 1:
        accelerator.print("warning: ranks ended with different weights: " + ", ".join(d[:12] for d in digests))
    if main:
        _save_weights(out, raw_model, ema)
        summary = {
            "steps": end_step,
            "max_steps": cfg.max_steps,
            "stopped_by_time": end_step < cfg.max_steps,
            "train_seconds": time.perf_counter() - t_start,
            "final_loss": last_loss,
            "world_size": world,
            "task": task.name,
            "param_sha256_per_rank": digests,
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        if writer is not None:
            writer.close()
    accelerator.wait_for_everyone()
    return out / "model"
