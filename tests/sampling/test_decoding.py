"""Decoding over a step function: determinism, beam >= greedy, controls."""

from __future__ import annotations

import pytest
import torch

from unicxr.sampling.decoding import DecodeConfig, beam_search, decode, greedy_decode, process_logits


def _toy_step(vocab: int = 12, seed: int = 0):
    """A fixed random bigram-ish LM over a cache holding the previous token."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab, vocab, generator=g) * 3

    def step(ids, cache):
        return table[ids[:, -1]], {"n": (cache or {}).get("n", 0) + ids.shape[1], "x": torch.zeros(ids.shape[0], 2)}

    return step


@pytest.mark.parametrize("seed", range(6))
def test_beam_log_likelihood_at_least_greedy(seed):
    step = _toy_step(seed=seed)
    prompt = torch.zeros(3, 1, dtype=torch.long)
    cfg = DecodeConfig(max_new_tokens=8, eos_id=1, length_penalty=0.0, num_beams=4)
    g = greedy_decode(step, prompt, None, cfg)
    b = beam_search(step, prompt, {"x": torch.zeros(3, 2)}, cfg)
    assert (b.scores >= g.scores - 1e-5).all()


def test_decoding_is_deterministic_and_seeded():
    step = _toy_step()
    prompt = torch.zeros(2, 1, dtype=torch.long)
    for method in ("greedy", "beam"):
        cfg = DecodeConfig(method=method, max_new_tokens=6, eos_id=1)
        assert decode(step, prompt, None, cfg).sequences == decode(step, prompt, None, cfg).sequences
    cfg = DecodeConfig(method="nucleus", max_new_tokens=10, eos_id=None, top_p=0.95, temperature=1.5)
    a = decode(step, prompt, None, cfg, torch.Generator().manual_seed(3)).sequences
    b = decode(step, prompt, None, cfg, torch.Generator().manual_seed(3)).sequences
    assert a == b


def test_controls():
    hist = torch.tensor([[5, 6, 5]])
    lg = torch.zeros(1, 10)
    out = process_logits(lg, hist, 0, DecodeConfig(no_repeat_ngram_size=2, eos_id=1, min_new_tokens=2))
    assert out[0, 6] == float("-inf") and out[0, 1] == float("-inf") and out[0, 5] == 0  # (5,6) seen; eos banned
    rp = process_logits(torch.ones(1, 10), hist, 5, DecodeConfig(repetition_penalty=2.0))
    assert rp[0, 5] == 0.5 and rp[0, 0] == 1.0
    step = _toy_step()
    out = greedy_decode(step, torch.zeros(1, 1, dtype=torch.long), None,
                        DecodeConfig(max_new_tokens=20, eos_id=1, min_new_tokens=5, no_repeat_ngram_size=1))
    seq = out.sequences[0]
    assert len(seq) >= 5 and len(set(seq)) == len(seq)  # nothing repeated
    with pytest.raises(ValueError):
        DecodeConfig(method="bogus")
