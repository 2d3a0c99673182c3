"""Autoregressive decoding over any model: greedy, beam search and nucleus sampling.

Pure functions over a ``step`` callable, so every autoregressive model of unicxr (the report decoder,
the unified model) decodes with the same code::

    step(ids, cache) -> (logits, cache)

``ids`` (B, t) are the tokens not yet seen by the model (the whole prompt on the first call, then one
token per call), ``cache`` is whatever the model keeps between calls (None at first, or what the
caller prepared, e.g. encoded image memory), ``logits`` (B, V) are the next-token logits at the last
position. For beam search every tensor of the cache must have the batch on dimension 0 (or pass
``reorder``); beams are expanded and reordered with :func:`unicxr.models.layers.reorder_cache`.

Controls (:class:`DecodeConfig`): ``max_new_tokens``, ``min_new_tokens`` (end-of-sequence banned
before), ``repetition_penalty`` (CTRL-style, > 1 discourages tokens already generated),
``no_repeat_ngram_size`` (an n-gram never appears twice), ``length_penalty`` (beam hypotheses ranked
by sum log p / length^lp), ``temperature`` / ``top_k`` / ``top_p`` (sampling).

Returned ``scores`` are the model's own log-likelihoods of the generated tokens (eos included,
before any penalty), so outputs of different methods are comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

__all__ = [
    "StepFn",
    "DecodeConfig",
    "DecodeOutput",
    "process_logits",
    "greedy_decode",
    "sample_decode",
    "beam_search",
    "decode",
    "decode_reports",
    "teacher_forced_rows",
    "sequence_log_likelihood",
    "ReportWriter",
]

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@dataclass
class DecodeConfig:
    """Decoding options (see the module docstring)."""

    method: Literal["greedy", "beam", "nucleus"] = "greedy"
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    eos_id: int | None = None
    pad_id: int = 0
    num_beams: int = 4
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam", "nucleus"):
            raise ValueError(f"unknown decoding method {self.method!r} (greedy, beam, nucleus)")
        if self.max_new_tokens < 1 or self.min_new_tokens < 0 or self.num_beams < 1:
            raise ValueError("max_new_tokens >= 1, min_new_tokens >= 0 and num_beams >= 1 are required")
        if self.repetition_penalty <= 0 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("repetition_penalty > 0, temperature > 0 and 0 < top_p <= 1 are required")


@dataclass
class DecodeOutput:
    """Result of a decoding run.

    Attributes:
        sequences: B lists of generated token ids (prompt and eos excluded).
        scores: (B,) float, sum of the model's log-probabilities of the generated tokens (+ eos).
        finished: B flags, True where eos was produced before ``max_new_tokens``.
    """

    sequences: list[list[int]]
    scores: torch.Tensor
    finished: list[bool] = field(default_factory=list)


def process_logits(logits: torch.Tensor, history: torch.Tensor, n_generated: int, cfg: DecodeConfig) -> torch.Tensor:
    """Apply the decoding controls to next-token logits.

    Args:
        logits: (N, V) raw logits.
        history: (N, t) all token ids so far (prompt + generated).
        n_generated: tokens generated so far (for ``min_new_tokens``).
        cfg: the controls.

    Returns:
        (N, V) float32 logits (banned tokens at -inf).
    """
    out = logits.float().clone()
    if cfg.repetition_penalty != 1.0 and history.shape[1] > 0:
        prev = out.gather(1, history)
        prev = torch.where(prev > 0, prev / cfg.repetition_penalty, prev * cfg.repetition_penalty)
        out.scatter_(1, history, prev)
    n = cfg.no_repeat_ngram_size
    if n > 0 and history.shape[1] >= n:
        if n == 1:
            out.scatter_(1, history, float("-inf"))
        else:
            windows = history.unfold(1, n, 1)  # (N, W, n)
            tail = history[:, -(n - 1) :]  # (N, n-1)
            match = (windows[:, :, : n - 1] == tail[:, None, :]).all(-1)  # (N, W)
            rows, cols = match.nonzero(as_tuple=True)
            if rows.numel():
                out[rows, windows[rows, cols, n - 1]] = float("-inf")
    if cfg.eos_id is not None and n_generated < cfg.min_new_tokens:
        out[:, cfg.eos_id] = float("-inf")
    return out


def _first_call(step: StepFn, prompt: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (B, T>=1) token ids, got {tuple(prompt.shape)}")
    return step(prompt, cache)


def _run_single(
    step: StepFn, prompt: torch.Tensor, cache: Any, cfg: DecodeConfig, pick: Callable[[torch.Tensor], torch.Tensor]
) -> DecodeOutput:
    b = prompt.shape[0]
    logits, cache = _first_call(step, prompt, cache)
    history = prompt
    done = torch.zeros(b, dtype=torch.bool, device=prompt.device)
    scores = torch.zeros(b, dtype=torch.float32, device=prompt.device)
    seqs: list[list[int]] = [[] for _ in range(b)]
    for t in range(cfg.max_new_tokens):
        raw_logp = F.log_softmax(logits.float(), dim=-1)
        nxt = pick(process_logits(logits, history, t, cfg))  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, cfg.pad_id), nxt)
        scores += torch.where(done, torch.zeros_like(scores), raw_logp.gather(1, nxt[:, None])[:, 0])
        for i in range(b):
            if not done[i] and (cfg.eos_id is None or int(nxt[i]) != cfg.eos_id):
                seqs[i].append(int(nxt[i]))
        if cfg.eos_id is not None:
            done |= nxt == cfg.eos_id
        if bool(done.all()) or t == cfg.max_new_tokens - 1:
            break
        history = torch.cat([history, nxt[:, None]], dim=1)
        logits, cache = step(nxt[:, None], cache)
    return DecodeOutput(seqs, scores, [bool(d) for d in done])


@torch.no_grad()
def greedy_decode(step: StepFn, prompt: torch.Tensor, cache: Any = None, cfg: DecodeConfig | None = None) -> DecodeOutput:
    """Most likely next token at each step (deterministic). prompt (B, T) → :class:`DecodeOutput`."""
    cfg = cfg or DecodeConfig()
    return _run_single(step, prompt, cache, cfg, lambda lg: lg.argmax(dim=-1))


@torch.no_grad()
def sample_decode(
    step: StepFn,
    prompt: torch.Tensor,
    cache: Any = None,
    cfg: DecodeConfig | None = None,
    generator: torch.Generator | None = None,
) -> DecodeOutput:
    """Nucleus (top-p) / top-k sampling with temperature; the same ``generator`` seed gives the same text."""
    cfg = cfg or DecodeConfig(method="nucleus")

    def pick(lg: torch.Tensor) -> torch.Tensor:
        lg = lg / cfg.temperature
        if cfg.top_k > 0:
            kth = lg.topk(min(cfg.top_k, lg.shape[-1]), dim=-1).values[:, -1:]
            lg = lg.masked_fill(lg < kth, float("-inf"))
        if cfg.top_p < 1.0:
            sorted_lg, order = lg.sort(dim=-1, descending=True)
            probs = sorted_lg.softmax(-1)
            # drop a token when the mass strictly before it already reaches top_p (keeps >= 1 token)
            drop = probs.cumsum(-1) - probs >= cfg.top_p
            sorted_lg = sorted_lg.masked_fill(drop, float("-inf"))
            lg = torch.full_like(lg, float("-inf")).scatter(1, order, sorted_lg)
        probs = lg.softmax(-1)
        return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(lg.device)

    return _run_single(step, prompt, cache, cfg, pick)


@torch.no_grad()
def beam_search(
    step: StepFn,
    prompt: torch.Tensor,
    cache: Any = None,
    cfg: DecodeConfig | None = None,
    reorder: Callable[[Any, torch.Tensor], Any] | None = None,
) -> DecodeOutput:
    """Beam search with ``cfg.num_beams`` beams per item.

    Hypotheses are ranked by (penalised) sum log-probability / length^``length_penalty``; an item stops
    when it has ``num_beams`` finished hypotheses and no running beam can still beat the worst of them.
    """
    from unicxr.models.layers import reorder_cache

    cfg = cfg or DecodeConfig(method="beam")
    reorder = reorder or reorder_cache
    b, k = prompt.shape[0], cfg.num_beams
    dev = prompt.device
    expand = torch.arange(b, device=dev).repeat_interleave(k)
    prompt = prompt.index_select(0, expand)
    cache = reorder(cache, expand) if cache is not None else None
    logits, cache = _first_call(step, prompt, cache)
    history = prompt  # (B*K, t)
    beam_scores = torch.full((b, k), float("-inf"), device=dev)
    beam_scores[:, 0] = 0.0
    raw_scores = torch.zeros(b, k, device=dev)
    gen: list[list[int]] = [[] for _ in range(b * k)]
    finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(b)]  # (norm score, raw, ids)
    done = [False] * b

    def norm(score: float, length: int) -> float:
        return score / (max(length, 1) ** cfg.length_penalty)

    for t in range(cfg.max_new_tokens):
        proc = F.log_softmax(process_logits(logits, history, t, cfg), dim=-1)  # (B*K, V)
        raw = F.log_softmax(logits.float(), dim=-1)
        vocab = proc.shape[-1]
        cand = (beam_scores.view(-1, 1) + proc).view(b, k * vocab)
        top_s, top_i = cand.topk(min(2 * k, k * vocab), dim=-1)
        next_tokens, next_origin = [], []
        new_scores = torch.full((b, k), float("-inf"), device=dev)
        new_raw = torch.zeros(b, k, device=dev)
        last = t == cfg.max_new_tokens - 1
        for i in range(b):
            chosen = 0
            if not done[i]:
                for s, idx in zip(top_s[i].tolist(), top_i[i].tolist(), strict=True):
                    if s == float("-inf"):
                        break
                    beam, tok = divmod(idx, vocab)
                    row = i * k + beam
                    r = float(raw_scores[i, beam]) + float(raw[row, tok])
                    if cfg.eos_id is not None and tok == cfg.eos_id:
                        finished[i].append((norm(s, len(gen[row]) + 1), r, list(gen[row])))
                        continue
                    if chosen < k:
                        next_tokens.append(tok)
                        next_origin.append(row)
                        new_scores[i, chosen] = s
                        new_raw[i, chosen] = r
                        chosen += 1
                    if chosen == k:
                        break
            while chosen < k:  # finished item (or too few candidates): keep dead beams
                next_tokens.append(cfg.pad_id)
                next_origin.append(i * k)
                chosen += 1
            if not done[i]:
                finished[i].sort(key=lambda h: -h[0])
                del finished[i][k:]
                if len(finished[i]) >= k:
                    best_running = float(new_scores[i].max())
                    bound = best_running / (cfg.max_new_tokens ** cfg.length_penalty) if cfg.length_penalty > 0 else best_running
                    if best_running == float("-inf") or bound <= finished[i][-1][0]:
                        done[i] = True
        origin = torch.tensor(next_origin, device=dev)
        toks = torch.tensor(next_tokens, device=dev)
        gen = [gen[o] + [tok] for o, tok in zip(next_origin, next_tokens, strict=True)]
        beam_scores, raw_scores = new_scores, new_raw
        if all(done) or last:
            break
        history = torch.cat([history.index_select(0, origin), toks[:, None]], dim=1)
        cache = reorder(cache, origin)
        logits, cache = step(toks[:, None], cache)

    seqs, scores, fin = [], [], []
    for i in range(b):
        hyps = list(finished[i])
        is_fin = bool(hyps)
        if not done[i]:  # running beams compete too (max length reached)
            for j in range(k):
                s = float(beam_scores[i, j])
                if s > float("-inf"):
                    hyps.append((norm(s, len(gen[i * k + j])), float(raw_scores[i, j]), gen[i * k + j]))
        best = max(hyps, key=lambda h: h[0]) if hyps else (0.0, 0.0, [])
        seqs.append(list(best[2]))
        scores.append(best[1])
        fin.append(is_fin and any(h is best for h in finished[i]))
    return DecodeOutput(seqs, torch.tensor(scores), fin)


def decode(
    step: StepFn,
    prompt: torch.Tensor,
    cache: Any = None,
    cfg: DecodeConfig | None = None,
    generator: torch.Generator | None = None,
) -> DecodeOutput:
    """Dispatch on ``cfg.method``: ``greedy``, ``beam`` or ``nucleus``."""
    cfg = cfg or DecodeConfig()
    if cfg.method == "beam":
        return beam_search(step, prompt, cache, cfg)
    if cfg.method == "nucleus":
        return sample_decode(step, prompt, cache, cfg, generator)
    return greedy_decode(step, prompt, cache, cfg)


def decode_reports(
    step: StepFn,
    cache: Any,
    tokenizer: Any,
    batch_size: int,
    max_len: int,
    device: torch.device,
    cfg: DecodeConfig | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Report text from BOS for a model's ``step`` function (report generator, unified model).

    ``cfg`` gets the tokenizer's eos/pad ids and at most ``max_len - 1`` new tokens (the model's
    positions, BOS included). Returns ``{"reports": [str]*B, "ids": [[int]]*B, "scores": (B,)}``.
    """
    if tokenizer is None:
        from unicxr.utils.errors import UnicxrError

        raise UnicxrError("this model has no tokenizer component: it cannot write reports")
    cfg = cfg or DecodeConfig()
    new = {"eos_id": tokenizer.eos_id, "pad_id": max(tokenizer.pad_id, 0),
           "max_new_tokens": min(cfg.max_new_tokens, max_len - 1)}  # fmt: skip
    cfg = DecodeConfig(**{**cfg.__dict__, **new})
    start = torch.full((batch_size, 1), tokenizer.bos_id, dtype=torch.long, device=device)
    out = decode(step, start, cache, cfg, generator)
    return {"reports": [tokenizer.decode(s) for s in out.sequences], "ids": out.sequences, "scores": out.scores}


def teacher_forced_rows(tokenizer: Any, ids: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``[bos, *ids, eos]`` rows right-padded with 0: (tokens (B, W), keep (B, W-1) 1.0 where the
    next-token target is real), for summing teacher-forced log-likelihoods of decoded sequences."""
    rows = [[tokenizer.bos_id, *s, tokenizer.eos_id] for s in ids]
    width = max(len(r) for r in rows)
    x = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
    keep = torch.tensor([[1.0] * (len(r) - 1) + [0.0] * (width - len(r)) for r in rows], device=device)
    return x, keep


def sequence_log_likelihood(logits: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Sum of log p(tokens[:, 1:]) under teacher-forced ``logits`` (B, W-1, V), masked by ``keep``: (B,)."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(2, tokens[:, 1:, None])[..., 0]
    return (logp * keep).sum(1).cpu()


class ReportWriter:
    """Mixin for the models that write reports (report generator, unified model): report writing and
    scoring over the model's own :meth:`step_fn`, so both share one path from images to text.

    The model provides ``step_fn()`` (a :data:`StepFn`), ``tokenizer``, ``config.max_len`` and
    :meth:`report_start` / :meth:`teacher_forced_logits`.
    """

    def report_start(self, images: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
        """Images (B, 1, H, W) on the model's device → (the initial decoding cache of ``step_fn``, aux
        finding logits (B, 14) or None)."""
        raise NotImplementedError

    def teacher_forced_logits(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) for images (B, 1, H, W) and input tokens ``ids`` (B, T)."""
        raise NotImplementedError

    @torch.no_grad()
    def generate_reports(
        self, images: torch.Tensor, decode_cfg: DecodeConfig | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Write reports for images (B, 1, H, W) in [0, 1].

        Returns:
            ``{"reports": [str]*B, "ids": [[int]]*B, "scores": (B,) log-likelihoods,
            "probabilities": (B, 14) aux head sigmoids or None}``.
        """
        dev = next(self.parameters()).device  # type: ignore[attr-defined]
        cache, aux = self.report_start(images.to(dev))
        out = decode_reports(self.step_fn(), cache, self.tokenizer, images.shape[0],  # type: ignore[attr-defined]
                             self.config.max_len, dev, decode_cfg, generator)  # type: ignore[attr-defined]  # fmt: skip
        out["probabilities"] = None if aux is None else torch.sigmoid(aux.float()).cpu()
        return out

    @torch.no_grad()
    def sequence_log_likelihood(self, images: torch.Tensor, ids: list[list[int]]) -> torch.Tensor:
        """Sum log p of each sequence (+ eos) under teacher forcing: (B,). For tests and scoring."""
        dev = next(self.parameters()).device  # type: ignore[attr-defined]
        x, keep = teacher_forced_rows(self.tokenizer, ids, dev)  # type: ignore[attr-defined]
        # causal: the trailing padding of shorter rows is never seen by the real positions
        return sequence_log_likelihood(self.teacher_forced_logits(images.to(dev), x[:, :-1]), x, keep)
