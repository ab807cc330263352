"""Unit generator: streaming == full pass, KV roll-back/compaction, checkpoints, and the
per-chunk session (reply-text policy, predicted vs real user chunks) against the training format."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agent.reply_text import TextConditioner
from agent.sync_format import UnitVocab, dedup, frames_per_chunk, split_chunks
from agent.unit_generator import GeneratorArch, UnitGenerator, load_generator_file, save_generator
from agent.unit_session import GeneratorSession
from training.unit_sequences import duplex_sequence, token_table
from training.unit_synthetic import synthetic_dialogues

WORDS = ["hello", "there", "friend", "weather", "tomorrow", "is", "sunny", "and", "warm", "unbelievable",
         "Paris", "capital", "France", "twenty", "minutes"]


def _model(cond_dim: int = 16, use_hidden: bool = False, max_context: int = 512, **kw) -> UnitGenerator:
    torch.manual_seed(0)
    arch = GeneratorArch(cond_dim=cond_dim, use_hidden=use_hidden, d_model=32, num_layers=2, num_heads=4, **kw)
    return UnitGenerator(arch, max_context=max_context).eval()


def _batch(model: UnitGenerator, b: int, t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.vocab.size, (b, t), generator=g)
    tokens[:, 3::7] = model.vocab.text
    cond = torch.randn(b, t, model.arch.cond_in, generator=g)
    return tokens, cond


@pytest.mark.parametrize("cuts", [[1] * 12, [5, 7], [3, 1, 8], [12]])
def test_streaming_prefill_equals_full_pass(cuts):
    model = _model()
    tokens, cond = _batch(model, 2, sum(cuts))
    with torch.no_grad():
        full = model(tokens, cond)
    outs, pos = [], 0
    with model.streaming(2):
        for c in cuts:
            outs.append(model.prefill(tokens[:, pos : pos + c], cond[:, pos : pos + c]))
            pos += c
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-4)


def test_causal_and_text_slots_matter():
    model = _model()
    tokens, cond = _batch(model, 1, 30)
    with torch.no_grad():
        a = model(tokens, cond)
        t2 = tokens.clone()
        t2[0, 20:] = 5
        b = model(t2, cond)
        c2 = cond.clone()
        c2[0, 3] = torch.randn(model.arch.cond_in)  # position 3 is a text slot
        c = model(tokens, c2)
        c3 = cond.clone()
        c3[0, 4] = torch.randn(model.arch.cond_in)  # not a text slot: ignored
        d = model(tokens, c3)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-3
    torch.testing.assert_close(a[:, :3], c[:, :3])
    assert (a[:, 3:] - c[:, 3:]).abs().max() > 1e-4
    torch.testing.assert_close(a, d)


def test_rows_roll_back_independently_and_compaction_slides_the_window():
    model = _model()
    tokens, cond = _batch(model, 2, 40)
    with torch.no_grad(), model.streaming(2):
        model.prefill(tokens[:, :30], cond[:, :30])
        # Row 0 forgets its last 10 tokens and reads different ones; row 1 keeps going.
        model.truncate(torch.tensor([20, 30]))
        alt = tokens[:1, 30:40].flip(1)
        block = torch.stack([alt[0], tokens[1, 30:40]])
        cblock = torch.stack([cond[0, 30:40], cond[1, 30:40]])
        got = model.prefill(block, cblock)
        full0 = model(torch.cat([tokens[:1, :20], alt], 1), torch.cat([cond[:1, :20], cond[:1, 30:40]], 1))
        full1 = model(tokens[1:], cond[1:])
        torch.testing.assert_close(got[0], full0[0, 20:30], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got[1], full1[0, 30:40], atol=1e-5, rtol=1e-4)
    with torch.no_grad(), model.streaming(1):
        model.prefill(tokens[:1, :30], cond[:1, :30])
        st = model.streaming_state
        before_k, before_v = st.keys[:, 0, :, 18:30].clone(), st.values[:, 0, :, 18:30].clone()
        assert model.compact(keep=12) == 18
        # The newest 12 slots move to the front unchanged; positions keep counting (rotary
        # angles are relative, so the kept keys stay valid: a sliding attention window).
        torch.testing.assert_close(st.keys[:, 0, :, :12], before_k)
        torch.testing.assert_close(st.values[:, 0, :, :12], before_v)
        assert int(st.lengths[0]) == 12 and int(st.positions[0]) == 30
        model.prefill(tokens[:1, 30:31], cond[:1, 30:31])
        assert int(st.lengths[0]) == 13 and int(st.positions[0]) == 31


def test_checkpoint_round_trip(tmp_path):
    model = _model(chunk_ms=200, text_lookahead=1)
    path = tmp_path / "gen.safetensors"
    save_generator(model, path, extra={"silent_units": [0, 3]}, dtype=torch.float32)
    loaded = load_generator_file(path)
    assert loaded.model.arch == model.arch and loaded.extra == {"silent_units": [0, 3]}
    tokens, cond = _batch(model, 1, 25)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens, cond), model(tokens, cond))


@pytest.fixture(scope="module")
def lexicon(tiny_llm):
    return [tiny_llm.encode_text(" " + w) for w in WORDS]


def _run_teacher_forced(session: GeneratorSession, d, seq, vocab, tokens_table, leads_chunks, delay: int = 0):
    """Drive a session through dialogue ``d`` with the agent chunks forced to the training
    sequence's and the real user chunks arriving ``delay`` chunks late."""
    n = session.n
    chunks = split_chunks(seq.tokens, vocab)
    starts = sorted(leads_chunks)
    user = np.concatenate([d.user, np.full((-len(d.user)) % n, d.user[-1])])
    steps = []
    for k in range(len(chunks)):
        for ins_chunk, turn_ids in leads_chunks.items():
            if ins_chunk == k:
                session.start_reply()
                for tok in turn_ids:
                    session.push_text(int(tok))
                session.end_text()
        j = k - 1 - delay
        if j >= 0:
            session.push_user_chunk(j, user[j * n : (j + 1) * n])
        a, b = seq.chunk_pos[k]
        forced = [int(t) for t in seq.tokens[a + 1 : b] if vocab.is_unit(int(t)) or int(t) == vocab.word]
        steps.append(session.step(force_agent=forced))
    del starts
    return steps


@pytest.mark.parametrize("kind", ["duplex", "overlap"])
def test_session_rebuilds_the_training_sequence(tiny_llm, tiny_cfg, lexicon, kind):
    """With the agent's units forced and real user chunks on time, the session's context is the
    training sequence token for token, text slots included (the run-time policy == the format)."""
    vocab = UnitVocab(500)
    model = _model(cond_dim=tiny_llm.hidden_size, use_hidden=False, max_context=4096)
    cond = TextConditioner.from_llm(tiny_llm, use_hidden=False)
    for d in synthetic_dialogues(2, lexicon, kind=kind, seed=3):
        seq = duplex_sequence(d, vocab, 160, model.arch.text_lookahead)
        n = frames_per_chunk(160)
        ins = {int(t.word_onsets[0]) // n: t.token_ids for t in d.agent_turns}
        session = GeneratorSession(model, tiny_cfg.generator, cond)
        steps = _run_teacher_forced(session, d, seq, vocab, None, ins)
        ctx = session.context_tokens()
        last_s1 = int(seq.chunk_pos[-1, 1])
        assert ctx == seq.tokens[:last_s1].tolist()
        assert all(s.user_source == "real" for s in steps[1:])
        # Text slots carry the embeddings of the right tokens.
        table, _ = token_table(d)
        rows = seq.cond_rows[:last_s1]
        for pos in np.nonzero(rows >= 0)[0][:20]:
            want = cond.vectors([int(table[rows[pos]])], None)[0]
            torch.testing.assert_close(session.ctx.conds[pos], want)


def test_phoneme_slots_at_run_time_equal_the_training_slots(tiny_llm, tiny_cfg, lexicon):
    """A generator that reads pronunciations: the session, fed LLM tokens only, phonemizes each
    word itself and builds exactly the training sequence of the phoneme-slot corpus, with the
    same slot vectors (token slots, then one one-hot slot per phoneme), and the model reads them."""
    from training.units_common import CondTable, UnitCorpus

    vocab = UnitVocab(500)
    corpus = UnitCorpus(synthetic_dialogues(2, lexicon, kind="overlap", seed=3), 500, [0], 0)
    table = CondTable.from_llm(tiny_llm, use_hidden=False)
    symbols = table.fit_phonemes(corpus)
    assert {"ˈ", "h", "ɛ"} <= set(symbols)  # IPA with stress marks ("hello", "friend", ...)
    slotted = table.add_phoneme_slots(corpus)
    model = _model(cond_dim=tiny_llm.hidden_size, use_hidden=False, max_context=4096, phoneme_symbols=symbols)
    cond = TextConditioner.from_llm(tiny_llm, use_hidden=False, phoneme_symbols=symbols)
    n = frames_per_chunk(160)
    for d, plain in zip(slotted.dialogues, corpus.dialogues, strict=True):
        for t, t0 in zip(d.agent_turns, plain.agent_turns, strict=True):
            assert t.token_ids[t.token_ids >= 0].tolist() == t0.token_ids.tolist()
            assert all(a > b for a, b in zip(t.word_tokens, t0.word_tokens, strict=True))  # every word has phonemes
        seq = duplex_sequence(d, vocab, 160, model.arch.text_lookahead)
        ins = {int(t.word_onsets[0]) // n: t.token_ids for t in plain.agent_turns}  # the runtime gets tokens
        session = GeneratorSession(model, tiny_cfg.generator, cond)
        _run_teacher_forced(session, d, seq, vocab, None, ins)
        last_s1 = int(seq.chunk_pos[-1, 1])
        assert session.context_tokens() == seq.tokens[:last_s1].tolist()
        rows = seq.cond_rows[:last_s1]
        slots = np.nonzero(rows >= 0)[0]
        want = table.vectors(d, rows[slots])
        got = torch.stack([session.ctx.conds[p] for p in slots])
        torch.testing.assert_close(got, want)
        is_phoneme = want[:, model.arch.llm_cond_in :].sum(1) == 1
        assert is_phoneme.sum() > is_phoneme.logical_not().sum()  # more phonemes than tokens
        assert (want[is_phoneme, : model.arch.llm_cond_in] == 0).all()
    # The phoneme slots change what the model predicts.
    tokens = torch.tensor([seq.tokens[:last_s1].tolist()])
    conds = torch.zeros(1, last_s1, model.arch.cond_in)
    conds[0, slots] = want
    muted = conds.clone()
    muted[0, :, model.arch.llm_cond_in :] = 0
    muted[0, slots[is_phoneme.numpy()]] = 0
    with torch.no_grad():
        assert not torch.allclose(model(tokens, conds), model(tokens, muted))


def test_warm_start_adds_a_fresh_phoneme_embedding(tmp_path):
    """A generator trained without pronunciations can start one that reads them: every other
    weight is the init's, so on slots without phonemes it predicts exactly as before."""
    from training.units_common import build_model

    plain = _model(cond_dim=16)
    path = tmp_path / "plain.safetensors"
    save_generator(plain, path, dtype=torch.float32)
    arch = dataclasses.replace(plain.arch, phoneme_symbols=("a", "b", "ˈ"))
    model = build_model(arch, path, max_len=512).eval()
    assert model.phoneme_embed is not None and model.arch.cond_in == plain.arch.cond_in + 3
    tokens, cond = _batch(plain, 2, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, torch.cat([cond, torch.zeros(2, 30, 3)], -1)), plain(tokens, cond))
    save_generator(model, tmp_path / "ph.safetensors", dtype=torch.float32)
    assert load_generator_file(tmp_path / "ph.safetensors").model.arch.phoneme_symbols == ("a", "b", "ˈ")
    with pytest.raises(ValueError, match="phoneme inventory"):
        build_model(dataclasses.replace(arch, phoneme_symbols=("a", "b")), tmp_path / "ph.safetensors", max_len=512)


def test_late_user_chunks_replace_predictions_and_cache_stays_exact(tiny_llm, tiny_cfg, lexicon):
    vocab = UnitVocab(500)
    model = _model(cond_dim=tiny_llm.hidden_size, use_hidden=False, max_context=4096)
    cond = TextConditioner.from_llm(tiny_llm, use_hidden=False)
    d = synthetic_dialogues(1, lexicon, kind="overlap", seed=5)[0]
    seq = duplex_sequence(d, vocab, 160, model.arch.text_lookahead)
    n = frames_per_chunk(160)
    ins = {int(t.word_onsets[0]) // n: t.token_ids for t in d.agent_turns}
    for predict in (True, False):
        cfg = dataclasses.replace(tiny_cfg.generator, predict_user=predict)
        session = GeneratorSession(model, cfg, cond)
        steps = _run_teacher_forced(session, d, seq, vocab, None, ins, delay=3)
        sources = {s.user_source for s in steps[1:]}
        assert sources == {"predicted" if predict else "silence"}
        assert sum(s.replaced for s in steps) > 0
        # Every user chunk old enough to have arrived is now the real one...
        ctx = session.context_tokens()
        upto = int(seq.chunk_pos[len(steps) - 4, 1])
        assert ctx[:upto] == seq.tokens[:upto].tolist()
        # ...and the rolled-back / re-read KV cache equals one full pass over the context.
        session.model.set_streaming_state(session._state)
        try:
            session._append(vocab.s1)
            got = session._feed()  # reads the not-yet-fed tail + the probe through the cache
        finally:
            session.model.set_streaming_state(None)
        z = torch.zeros(model.arch.cond_in)
        conds = torch.stack([z if c is None else c for c in session.ctx.conds])[None]
        full = model(torch.tensor([ctx + [vocab.s1]]), conds)[0, -1]
        torch.testing.assert_close(got, full, atol=1e-4, rtol=1e-4)


def test_reply_waits_for_lookahead_words_and_follows_word_onsets(tiny_llm, tiny_cfg):
    vocab = UnitVocab(500)
    model = _model(cond_dim=tiny_llm.hidden_size, use_hidden=True, text_lookahead=2)
    cond = TextConditioner.from_llm(tiny_llm, use_hidden=True)
    ids = tiny_llm.encode_text("Paris is unbelievable, really.")
    words = cond.group_words(ids)
    assert len(words) == 4  # "Paris", " is", " unbelievable,", " really."
    session = GeneratorSession(model, tiny_cfg.generator, cond)
    hidden = torch.randn(len(ids), tiny_llm.hidden_size)
    session.start_reply()
    session.push_text(ids[0], hidden[0])
    session.step(force_agent=[0])
    session.push_text(ids[1], hidden[1])
    session.step(force_agent=[0])
    # Two words exist but the second is complete only when the third begins.
    assert vocab.text not in session.context_tokens()
    k = words[2][0]
    session.push_text(ids[k], hidden[k])
    session.step(force_agent=[0, vocab.word, 7])
    ctx = session.context_tokens()
    s0 = len(ctx) - 1 - ctx[::-1].index(vocab.s0)
    # Chunk start: the two first words' slots; then [W] brings the third word, but it is not
    # complete yet: the insertion is owed.
    n_first = len(words[0]) + len(words[1])
    assert ctx[s0 + 1 : s0 + 1 + n_first] == [vocab.text] * n_first
    assert ctx[s0 + 1 + n_first : s0 + 4 + n_first] == [0, vocab.word, 7]
    for i in range(k + 1, len(ids)):
        session.push_text(ids[i], hidden[i])
    session.end_text()
    session.step(force_agent=[7, vocab.word, 9])
    ctx = session.context_tokens()
    s0 = len(ctx) - 1 - ctx[::-1].index(vocab.s0)
    # The owed third word at the chunk start, then [W] -> the fourth word, and later [EOT].
    tail = ctx[s0 + 1 :]
    assert tail == [vocab.text] * len(words[2]) + [7, vocab.word] + [vocab.text] * len(words[3]) + [9]
    session.step(force_agent=[9, vocab.word, 3])
    assert session.context_tokens()[-3:] == [vocab.word, vocab.eot, 3]
    # Slot vectors are [embedding, hidden] of the right tokens.
    pos = session.context_tokens().index(vocab.text)
    torch.testing.assert_close(session.ctx.conds[pos][tiny_llm.hidden_size :], hidden[0])


def test_generation_respects_the_format(tiny_llm, tiny_cfg, lexicon):
    """Sampled chunks always parse: 1..n units per side, no repeats inside a chunk, 25 Hz output."""
    model = _model(cond_dim=tiny_llm.hidden_size, use_hidden=False, max_context=256)
    cond = TextConditioner.from_llm(tiny_llm, use_hidden=False)
    cfg = dataclasses.replace(tiny_cfg.generator, temperature=1.0, top_k=0, compact_to=128)
    session = GeneratorSession(model, cfg, cond)
    session.start_reply()
    for tok in [t for w in lexicon[:6] for t in w]:
        session.push_text(tok)
    session.end_text()
    n = session.n
    for _ in range(60):  # > max_context tokens: compaction must kick in
        out = session.step()
        assert 1 <= len(out.agent_tokens) <= n and len(out.agent_units) == n
        assert dedup(out.agent_tokens)[0] == out.agent_tokens
        if out.user_units is not None:
            assert len(out.user_units) == n
    assert session._dropped > 0
    assert len(session.context_tokens()) <= 256
    # reset() starts a new dialogue: the same seed and inputs give the same first chunks.
    session.reset()
    session.rng.manual_seed(cfg.seed)
    again = GeneratorSession(model, cfg, cond)
    for _ in range(3):
        assert session.step().agent_tokens == again.step().agent_tokens
