"""The per-chunk runtime path (SpeechListener) equals the offline training computation; weights I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.speech_input import (
    ChatLayout,
    PrefixCache,
    SpeechListener,
    build_speech_input,
    ctc_greedy,
    text_to_ctc,
)
from agent.speech_weights import load_weights, read_metadata, save_weights
from agent.state_head import StateHead
from training.speech_eval import segment_inputs, state_logits_batch


@pytest.fixture(scope="module", params=[1, 3], ids=["head-1-chunk", "head-3-chunks"])
def tiny_speech(request, tiny_cfg, tiny_llm):
    """The tiny speech input with a 1-chunk state head and with a 3-chunk window head."""
    import dataclasses

    sc = tiny_cfg.speech
    cfg = dataclasses.replace(sc, state_head=dataclasses.replace(sc.state_head, context_chunks=request.param))
    torch.manual_seed(0)
    speech = build_speech_input(cfg, tiny_llm).eval()
    with torch.no_grad():  # a non-zero speaking vector and prompt so both paths must use them
        speech.speaking.normal_(0, 0.5)
    return speech


def _audio(chunks: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, chunks * 2560, generator=g) * 0.05


def test_listener_stream_equals_offline_training_path(tiny_cfg, tiny_llm, tiny_speech):
    layout = ChatLayout.for_llm(tiny_llm, tiny_cfg.speech.transcribe_instruction)
    listener = SpeechListener(tiny_speech, tiny_llm, layout)
    chunks = 12
    audio = _audio(chunks)
    speaking = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0], dtype=bool)
    with torch.no_grad(), listener.streaming(1):
        streamed = torch.cat([listener.step(audio[:, k * 2560 : (k + 1) * 2560], torch.tensor([bool(speaking[k])])).logits
                              for k in range(chunks)])
        first = listener.begin_reply()
    emb, n = tiny_speech.speech_embeds(audio)
    assert int(n[0]) == chunks * tiny_speech.positions_per_chunk
    with torch.no_grad():
        item = segment_inputs(tiny_speech, emb[0], speaking, 0, chunks)
        offline = state_logits_batch(tiny_speech, PrefixCache(tiny_llm, layout.prefix), [item])[0]
        # The reply's first-token logits equal a full forward over the whole context.
        ctx = torch.cat([tiny_llm.embed(torch.tensor(layout.prefix)), item[0], tiny_llm.embed(torch.tensor(layout.suffix))])
        full = tiny_llm.forward(ctx[None]).logits[0, -1]
    torch.testing.assert_close(streamed, offline, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(first[0], full, rtol=1e-4, atol=1e-4)


def test_speaking_vector_changes_the_decision_input(tiny_cfg, tiny_llm, tiny_speech):
    layout = ChatLayout.for_llm(tiny_llm, tiny_cfg.speech.transcribe_instruction)
    listener = SpeechListener(tiny_speech, tiny_llm, layout)
    audio = _audio(3, seed=1)
    outs = []
    for flag in (False, True):
        with torch.no_grad(), listener.streaming(1):
            for k in range(3):
                res = listener.step(audio[:, k * 2560 : (k + 1) * 2560], torch.tensor([flag]))
            outs.append(res.hidden)
    assert (outs[0] - outs[1]).abs().max() > 1e-3


def test_weights_roundtrip_holds_no_llm_tensors(tmp_path, tiny_cfg, tiny_llm, tiny_speech):
    path = save_weights(tiny_speech, tmp_path / "w.safetensors", meta={"stage": 3})
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith(("llm", "model.")) for k in keys)
    assert sum(p.numel() for p in tiny_speech.parameters()) == sum(
        np.prod(safe_open(str(path), "pt").get_slice(k).get_shape()) for k in keys if not k.endswith("embed_scale"))
    assert read_metadata(path)["stage"] == 3
    torch.manual_seed(1)
    other = build_speech_input(tiny_speech.cfg, tiny_llm).eval()
    audio = _audio(4, seed=2)
    assert not torch.allclose(other.speech_embeds(audio)[0], tiny_speech.speech_embeds(audio)[0])
    load_weights(other, path, strict_keys=True)
    torch.testing.assert_close(other.speech_embeds(audio)[0], tiny_speech.speech_embeds(audio)[0])


def test_ctc_text_roundtrip():
    ids = text_to_ctc("Hello, World! It's 3.")
    logits = torch.full((len(ids) * 2, 28), -5.0)
    for i, c in enumerate(ids):
        logits[2 * i, c] = 5.0  # each char then a blank
        logits[2 * i + 1, 0] = 5.0
    assert ctc_greedy(logits, len(ids) * 2) == "hello world it is three"


def test_state_head_reads_hidden():
    torch.manual_seed(0)
    head = StateHead(16, hidden=8)
    h = torch.randn(5, 16)
    out = head(h)
    assert out.shape == (5, 3)
    assert not torch.allclose(out[0], out[1])
    torch.testing.assert_close(head(h[:2]), out[:2])


def test_window_head_reads_exactly_its_window_of_chunks():
    torch.manual_seed(0)
    head = StateHead(16, hidden=8, context=3)
    h = torch.randn(8, 16)
    out = head(h)
    assert out.shape == (8, 3)
    for t in range(8):
        for j in range(8):
            g = h.clone()
            g[j] = torch.randn(16)
            moved = not torch.allclose(head(g)[t], out[t])
            assert moved == (t - 3 < j <= t), (t, j)
    # Streaming in pieces with the window carried over equals the whole run.
    a = head(h[:5])
    b = head(h[5:], h[3:5], torch.tensor(5))
    torch.testing.assert_close(torch.cat([a, b]), out)
    # Only `past_len` of the carried rows count (a context that is 1 chunk old).
    torch.testing.assert_close(head(h[1:3], torch.stack([h[7], h[0]]), torch.tensor(1)), out[1:3])


def test_restart_context_matches_training_segments(tiny_cfg, tiny_llm, tiny_speech):
    """LLM context restarts at a taken turn while the encoder runs on: the offline segments of
    stage 3 (embeddings from one pass over the whole episode) give the same logits."""
    layout = ChatLayout.for_llm(tiny_llm, tiny_cfg.speech.transcribe_instruction)
    listener = SpeechListener(tiny_speech, tiny_llm, layout)
    audio = _audio(10, seed=3)
    speaking = np.array([0, 0, 0, 0, 1, 1, 1, 0, 0, 0], dtype=bool)
    with torch.no_grad(), listener.streaming(1):
        first = [listener.step(audio[:, k * 2560 : (k + 1) * 2560], torch.tensor([bool(speaking[k])])).logits
                 for k in range(4)]
        listener.begin_reply()
        for _ in range(3):  # a few "reply tokens" land in the cache, then the context restarts
            tiny_llm.prefill_ids(torch.tensor([[42]]))
        listener.restart_context()
        second = [listener.step(audio[:, k * 2560 : (k + 1) * 2560], torch.tensor([bool(speaking[k])])).logits
                  for k in range(4, 10)]
    emb = tiny_speech.speech_embeds(audio)[0][0]
    prefix = PrefixCache(tiny_llm, layout.prefix)
    with torch.no_grad():
        a, b = state_logits_batch(tiny_speech, prefix, [segment_inputs(tiny_speech, emb, speaking, 0, 4),
                                                         segment_inputs(tiny_speech, emb, speaking, 4, 10)])
    torch.testing.assert_close(torch.cat(first), a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat(second), b, rtol=1e-4, atol=1e-4)


def test_context_start_is_copied_exactly_and_follows_the_prompt(monkeypatch, tiny_cfg, tiny_llm, tiny_speech):
    """Listening contexts after the first start from a copy of prefix + prompt: the same logits as
    prefilling them again (bit for bit), no prefill call, and a new copy once the prompt changes."""
    layout = ChatLayout.for_llm(tiny_llm, tiny_cfg.speech.transcribe_instruction)
    audio = _audio(6, seed=5)

    def run(listener: SpeechListener, copy: bool) -> list[torch.Tensor]:
        out = []
        with torch.no_grad(), listener.streaming(1):
            for k in range(6):
                if k in (2, 4):
                    if not copy:
                        listener._start = None
                    listener.restart_context()
                out.append(listener.step(audio[:, k * 2560 : (k + 1) * 2560]).logits)
        return out

    copied = run(SpeechListener(tiny_speech, tiny_llm, layout), True)
    prefilled = run(SpeechListener(tiny_speech, tiny_llm, layout), False)
    for a, b in zip(copied, prefilled, strict=True):
        assert torch.equal(a, b)

    listener = SpeechListener(tiny_speech, tiny_llm, layout)
    calls = []
    real_prefill = tiny_llm.prefill
    monkeypatch.setattr(tiny_llm, "prefill", lambda *a, **k: calls.append(a[0].shape[1]) or real_prefill(*a, **k))
    start = len(layout.prefix) + tiny_speech.prompt.shape[0]
    saved = tiny_speech.prompt.detach().clone()
    try:
        with torch.no_grad(), listener.streaming(1):
            listener.restart_context()
            listener.restart_context()
            assert calls == [start]  # the second start was a copy
            assert int(tiny_llm.streaming_state.lengths[0]) == start
            before = tiny_llm.streaming_state.cache.keys_buf[:, :, :, :start].clone()
            tiny_speech.prompt.add_(0.1)  # what an optimizer step does
            listener.restart_context()
            assert calls == [start, start]
            assert not torch.equal(tiny_llm.streaming_state.cache.keys_buf[:, :, :, :start], before)
    finally:
        with torch.no_grad():
            tiny_speech.prompt.copy_(saved)


def test_bundled_default_weights_load_through_the_card(default_cfg, llm):
    """The committed `speech-input-default` checkpoint (fp16 file, sha256 checked by its card) loads
    into the fp32 runtime listener exactly, and it is trained: its state head differs from a fresh one."""
    from safetensors.torch import load_file

    from agent.assets import check_source, load_card
    from agent.speech_input import load_listener

    card = load_card(default_cfg.speech.weights_card)
    tensors = load_file(str(check_source(card)))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    listener = load_listener(default_cfg.speech, llm)
    own = listener.speech.state_dict()
    assert set(tensors) == set(own)
    for name, t in tensors.items():
        assert own[name].dtype == (torch.float32 if t.is_floating_point() else t.dtype)
        torch.testing.assert_close(own[name], t.to(own[name].dtype), rtol=0, atol=0)
    torch.manual_seed(0)
    fresh = build_speech_input(default_cfg.speech, llm, load_weights=False)
    w = "state_head.net.0.weight"  # default preset: state_head.hidden = 256 (an MLP)
    assert (own[w] - fresh.state_dict()[w]).abs().max() > 1e-3


def test_an_init_file_with_a_narrower_state_head_keeps_the_fresh_head(tmp_path, tiny_cfg, tiny_llm):
    """Stage 3 can train a windowed head from a stage-2 file (1-chunk head): everything else loads."""
    import dataclasses

    from agent.assets import AssetError

    narrow = build_speech_input(tiny_cfg.speech, tiny_llm).eval()
    path = save_weights(narrow, tmp_path / "stage2.safetensors")
    sc = tiny_cfg.speech
    wide = build_speech_input(dataclasses.replace(sc, state_head=dataclasses.replace(sc.state_head, context_chunks=3)),
                              tiny_llm).eval()
    fresh = {k: v.clone() for k, v in wide.state_head.state_dict().items()}
    with pytest.raises(AssetError, match="context_chunks"):
        load_weights(wide, path)
    loaded = load_weights(wide, path, fresh_if_reshaped=("state_head.",))
    assert "state_head.net.0.weight" not in loaded and "state_head.norm.weight" in loaded
    torch.testing.assert_close(wide.state_head.net[0].weight, fresh["net.0.weight"])
    torch.testing.assert_close(wide.adapter.state_dict(), narrow.adapter.state_dict())
