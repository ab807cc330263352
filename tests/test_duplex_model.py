"""DuplexModel on the tiny preset (random tiny models, real code paths): time-batched listening
equals chunk-by-chunk, the listening and answer contexts do not disturb each other, and
``step()`` speaks, stops on barge-in and keeps sessions apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.duplex_model import CONTINUE, INTERRUPT, REJECT, emotion_from_text


def _load(tiny_cfg, head_context: int = 1, encoder_weights: str | None = None):
    import dataclasses

    from agent.duplex_model import load_duplex_model

    rt = dataclasses.replace(tiny_cfg.runtime, max_reply_s=2.0, max_tail_s=0.5,
                             encoder_weights=encoder_weights or tiny_cfg.runtime.encoder_weights)
    cfg = dataclasses.replace(tiny_cfg, runtime=rt)
    if head_context != 1:
        sc = cfg.speech
        cfg = dataclasses.replace(cfg, speech=dataclasses.replace(
            sc, state_head=dataclasses.replace(sc.state_head, context_chunks=head_context)))
    torch.set_num_threads(1)
    return load_duplex_model(cfg)


@pytest.fixture(scope="module")
def model(tiny_cfg):
    return _load(tiny_cfg)


def _audio(n_chunks: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_chunks * 2560) / 16000
    return (0.2 * np.sin(2 * np.pi * 180 * t) * (rng.random(len(t)) > 0.3) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("encoder_weights", ["native", "int8", "fp16"])
def test_listening_several_chunks_at_once_equals_one_by_one(tiny_cfg, encoder_weights):
    model = _load(tiny_cfg, encoder_weights=encoder_weights)
    audio = _audio(5)
    speaking = [False, False, True, True, False]
    a, b = model.new_state(), model.new_state()
    one = [model.listen(a, audio[i * 2560 : (i + 1) * 2560], speaking[i]) for i in range(5)]
    first = model.listen_chunks(b, audio[:2560], speaking[:1])
    rest = model.listen_chunks(b, audio[2560:], speaking[1:])
    many = first + rest
    # With int8 encoder weights a batch of chunks runs the same rounded weights in fp32 where one
    # chunk runs the int8 kernel on bf16 activations: equal up to that rounding.
    # fp16 weights run one kernel (fbgemm) for any block: as close as native.
    tol = dict(atol=2e-5, rtol=1e-4) if encoder_weights != "int8" else dict(atol=2e-3, rtol=1e-2)
    torch.testing.assert_close(torch.tensor(np.stack([r.probs for r in many])),
                               torch.tensor(np.stack([r.probs for r in one])), **tol)
    assert [r.index for r in many] == [0, 1, 2, 3, 4]


def test_fp16_unit_and_generator_weights_give_the_native_numbers(tiny_cfg):
    """``runtime.units_weights`` / ``generator_weights``: fp16 linears in the unit tokenizer's Whisper
    layers and the generator; the same units and (up to weight rounding) the same logits."""
    import dataclasses

    from agent.duplex_model import set_unit_weights
    from agent.llm_quant import Fp16Linear
    from agent.unit_generator import load_generator
    from agent.units import load_unit_tokenizer

    def parts(mode):
        units, gen = load_unit_tokenizer(tiny_cfg.units), load_generator(tiny_cfg.generator)
        set_unit_weights(units, gen, mode, mode)
        return units, gen.model.eval()

    (u32, g32), (u16, g16) = parts("native"), parts("fp16")
    assert all(isinstance(m, Fp16Linear) for m in [*g16.blocks[0].children(), g16.head] if not isinstance(
        m, (torch.nn.RMSNorm, torch.nn.Dropout)))
    assert any(isinstance(m, Fp16Linear) for m in u16.features.encoder.layers.modules())
    audio = _audio(6)
    with torch.no_grad():
        a, b = u32.extract(audio), u16.extract(audio)
        assert len(a) == 24 and float(np.mean(a == b)) >= 0.95  # a unit may flip where two centroids tie
        tokens = torch.randint(0, 500, (1, 64), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(g16(tokens), g32(tokens), atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="runtime.generator_weights"):
        set_unit_weights(u32, load_generator(tiny_cfg.generator), "native", "fp8")
    with pytest.raises(ValueError, match="runtime.units_weights"):
        _load(dataclasses.replace(tiny_cfg, runtime=dataclasses.replace(tiny_cfg.runtime, units_weights="half")))


def test_window_head_listening_in_batches_equals_one_by_one_across_a_taken_turn(tiny_cfg):
    """A 3-chunk state head keeps its window across batched listening and starts it afresh in
    the next listening context, as training's segments do."""
    m = _load(tiny_cfg, head_context=3, encoder_weights="native")  # exact equality (int8: see above)
    audio = _audio(9, seed=4)
    speaking = [False] * 9
    a, b = m.new_state(), m.new_state()

    def turn(st) -> None:  # take the turn: the next chunk restarts the listening context
        m.begin_reply(st, reply_id=1)

    one = [m.listen(a, audio[i * 2560 : (i + 1) * 2560], speaking[i]) for i in range(5)]
    turn(a)
    one += [m.listen(a, audio[i * 2560 : (i + 1) * 2560], speaking[i]) for i in range(5, 9)]
    many = m.listen_chunks(b, audio[: 2 * 2560], speaking[:2]) + m.listen_chunks(b, audio[2 * 2560 : 5 * 2560], speaking[2:5])
    turn(b)
    many += m.listen_chunks(b, audio[5 * 2560 :], speaking[5:])
    torch.testing.assert_close(torch.tensor(np.stack([r.probs for r in many])),
                               torch.tensor(np.stack([r.probs for r in one])), atol=2e-5, rtol=1e-4)


def test_listening_while_answering_does_not_change_the_answer(model):
    audio = _audio(6, seed=1)
    plain, busy = model.new_state(), model.new_state()
    for st in (plain, busy):
        model.listen_chunks(st, audio[: 4 * 2560], [False] * 4)
        model.begin_reply(st, reply_id=0)
    ref = model.decode(plain, 6)
    got = []
    for i in range(6):
        got.append(model.decode(busy, 1))
        # The user keeps talking over the answer: the listening context moves on meanwhile.
        model.listen(busy, audio[(i % 2) * 2560 : (i % 2 + 1) * 2560], agent_speaking=True)
    tokens = [t for c in got for t in c.tokens]
    assert tokens == ref.tokens[: len(tokens)] and len(tokens) == len(ref.tokens)
    torch.testing.assert_close(torch.cat([c.hidden for c in got if c.hidden is not None]), ref.hidden)
    # The listening context restarted after the turn was taken: its cache holds the new context only.
    assert busy.restarts == 0 and not busy.needs_restart
    llm_len = int(busy.listener["llm"].lengths[0])
    prompt = len(model.listener.layout.prefix) + model.listener.speech.prompt.shape[0]
    assert llm_len == prompt + 6 * model.positions_per_chunk


def test_a_reply_token_riding_on_a_listening_step_equals_a_job_of_its_own(model):
    """``listen_and_decode``: the listening step and the reply's next token in one LLM pass give
    the decisions and the tokens of a step and a decoding job, and the reply's end is known with
    its last token."""
    audio = _audio(16, seed=4)
    own, ride = model.new_state(), model.new_state()
    for st in (own, ride):
        model.listen_chunks(st, audio[: 4 * 2560], [False] * 4)
        model.begin_reply(st, reply_id=0)
    got: dict[str, list] = {"own": [], "ride": []}
    for i in range(4, 16):
        chunk = audio[i * 2560 : (i + 1) * 2560]
        got["own"].append((model.listen_chunks(own, chunk, [True]), model.decode(own, 1)))
        got["ride"].append(model.listen_and_decode(ride, chunk, [True], reply_id=0))
    for (l_own, t_own), (l_ride, t_ride) in zip(got["own"], got["ride"], strict=True):
        # Equal to float rounding (bit-identical where fbgemm's fp16 rows do not depend on the rows
        # stacked with them, as on AVX-512; ~1e-7 apart on AVX2): the same decisions and tokens.
        np.testing.assert_allclose(l_ride[0].probs, l_own[0].probs, rtol=1e-5, atol=1e-6)
        assert (t_own.tokens, t_own.text, t_own.ended) == (t_ride.tokens, t_ride.text, t_ride.ended)
        if t_own.hidden is not None:
            assert t_ride.hidden is not None
            torch.testing.assert_close(t_ride.hidden, t_own.hidden, rtol=1e-5, atol=1e-5)
    tokens = [t for _, c in got["ride"] for t in c.tokens]
    ended_at = [c.ended for _, c in got["ride"]].index(True)
    # The tiny reply (8 tokens at most) ends with the step that decoded its last token.
    assert 0 < len(tokens) <= model.llm.cfg.max_new_tokens and got["ride"][ended_at][1].tokens
    assert ride.reply is not None and ride.reply.ended and ride.reply.tokens == tokens
    # A step for a reply that is not the one decoding (cancelled, or a newer one) carries no token.
    model.begin_reply(ride, reply_id=1)
    _, none = model.listen_and_decode(ride, audio[:2560], [False], reply_id=0)
    assert none.tokens == [] and none.ended and ride.reply.id == 1 and ride.reply.tokens == []


def test_listening_steps_of_several_sessions_in_one_pass_equal_a_pass_each(model):
    """``listen_many``: sessions listened to in one LLM pass (one with a reply token riding, one
    catching up two chunks) get the decisions, tokens and context lengths of separate calls."""
    from agent.duplex_model import ListenJob

    audio = [_audio(10, seed=s) for s in (5, 6, 7)]
    alone, together = [model.new_state() for _ in range(3)], [model.new_state() for _ in range(3)]
    for states in (alone, together):
        for st, a in zip(states, audio, strict=True):
            model.listen_chunks(st, a[: 4 * 2560], [False] * 4)
        model.begin_reply(states[0], reply_id=0)
    for k in range(4, 10, 2):
        two = slice(k * 2560, (k + 2) * 2560)
        one = slice(k * 2560, (k + 1) * 2560)
        ref = [model.listen_and_decode(alone[0], audio[0][one], [True], reply_id=0),
               model.listen_chunks(alone[1], audio[1][one], [False]),
               model.listen_chunks(alone[2], audio[2][two], [False, True])]
        got = model.listen_many([ListenJob(together[0], audio[0][one], [True], reply_id=0),
                                 ListenJob(together[1], audio[1][one], [False]),
                                 ListenJob(together[2], audio[2][two], [False, True])])
        (l_ref, t_ref), (l_got, t_got) = ref[0], got[0]
        assert (t_ref.tokens, t_ref.text, t_ref.ended) == (t_got.tokens, t_got.text, t_got.ended)
        for r, g in zip([l_ref, *ref[1:]], [l_got, *got[1:]], strict=True):
            assert [x.index for x in r] == [x.index for x in g]
            # Equal to float rounding: fbgemm's fp16 rows may depend on the rows stacked with them (AVX2).
            np.testing.assert_allclose(np.stack([x.probs for x in g]), np.stack([x.probs for x in r]), rtol=1e-5, atol=1e-6)
    for a, t in zip(alone, together, strict=True):
        assert int(a.listener["llm"].lengths[0]) == int(t.listener["llm"].lengths[0])
    with pytest.raises(ValueError, match="one job per session"):
        model.listen_many([ListenJob(together[1], audio[1][:2560], [False])] * 2)


def test_a_speculated_reply_equals_the_reply_and_leaves_listening_untouched(model):
    audio = _audio(7, seed=3)
    plain, spec = model.new_state(), model.new_state()
    for st in (plain, spec):
        model.listen_chunks(st, audio[: 4 * 2560], [False] * 4)
    model.begin_reply(plain, reply_id=0)
    ref = model.decode(plain, 6)
    # Speculate, listen on (the listening context must move on as if nothing happened), then commit.
    # (Split as below: the int8 LLM weights take a different kernel for blocks over 8 positions.)
    ref_state = model.new_state()
    ref_listen = model.listen_chunks(ref_state, audio[: 4 * 2560], [False] * 4)
    ref_listen += model.listen_chunks(ref_state, audio[4 * 2560 : 6 * 2560], [False] * 2)
    model.speculate_reply(spec, reply_id=0)
    first = model.decode(spec, 2)
    model.cancel_text(spec, reply_id=7)  # a late cleanup of another reply: no effect
    assert spec.reply is not None and spec.reply.id == 0 and not spec.reply.ended
    got = model.listen_chunks(spec, audio[4 * 2560 : 6 * 2560], [False] * 2)
    torch.testing.assert_close(torch.tensor(np.stack([r.probs for r in got])),
                               torch.tensor(np.stack([r.probs for r in ref_listen[4:]])), atol=2e-5, rtol=1e-4)
    rest = model.decode(spec, 4)
    assert first.tokens + rest.tokens == ref.tokens
    torch.testing.assert_close(torch.cat([first.hidden, rest.hidden]), ref.hidden)
    assert not spec.needs_restart
    model.commit_speculation(spec)
    assert spec.needs_restart


def test_step_speaks_after_interrupt_and_stops_on_barge_in(model):
    st = model.new_state()
    script = {3: INTERRUPT, 14: CONTINUE}

    def head(state, k, speaking):
        if k in script:
            return np.eye(3)[script[k]]
        return np.eye(3)[REJECT if speaking else CONTINUE]

    model.head_override = head
    try:
        audio = _audio(20, seed=2)
        results = [model.step(st, audio[i * 2560 : (i + 1) * 2560]) for i in range(20)]
    finally:
        model.head_override = None
    events = {i: r.events for i, r in enumerate(results) if r.events}
    assert events[3] == ["take_turn"] and events[14] == ["barge_in"]
    spoken = [len(r.audio) for r in results]
    assert sum(spoken[4:14]) > 0.5 * 10 * 0.16 * model.sample_rate  # it spoke while its turn lasted
    assert all(n == 0 for n in spoken[14:])  # and nothing after the barge-in
    assert st.tts is None and st.speaking_reply is None and st.generator.reply is None


def test_follow_forces_the_silent_chunk_and_block_feeding_equals_stepwise(model):
    """While the agent has nothing to say the generator's agent chunk is forced silence, its tokens
    read into the cache in blocks: the next forward sees exactly what a chunk-by-chunk feed gives."""
    audio = _audio(8, seed=4)
    a, b = model.new_state(), model.new_state()
    n = model.units_per_chunk
    assert 1 <= len(model.silent_chunk) <= n
    for st in (a, b):
        model.user_units(st, audio, chunks=8)
    for _ in range(8):
        sa, sb = model.follow(a, feed_every=10_000), model.follow(b, feed_every=1)
        assert sa.agent_tokens == sb.agent_tokens == model.silent_chunk
        assert sa.user_source == sb.user_source and sa.user_source in ("none", "real")
        assert list(sa.agent_units) == list(sb.agent_units) and len(sa.agent_units) == n
        assert b.generator.ctx.fed == len(b.generator.ctx.tokens)
    ga, gb = a.generator, b.generator
    assert ga.context_tokens() == gb.context_tokens()
    assert ga.ctx.fed == 0  # nothing read yet: one block below
    probe = []
    for g in (ga, gb):
        g._append(g.vocab.s0)
        g.model.set_streaming_state(g._state)
        try:
            probe.append(g._feed())
        finally:
            g.model.set_streaming_state(None)
    torch.testing.assert_close(probe[0], probe[1], atol=1e-4, rtol=1e-4)
    assert ga.feed_pending(1) == 0  # all read


def test_sessions_are_independent(model):
    audio = _audio(12, seed=3)

    other_events: list[tuple[int, list[str]]] = []

    def run(with_other: bool) -> list[np.ndarray]:
        a = model.new_state()
        b = model.new_state() if with_other else None

        def head(state, k, speaking):
            if k == 2:
                return np.eye(3)[INTERRUPT]
            if state is b and k == 6:
                return np.eye(3)[CONTINUE]  # only the other session is barged in on
            return np.eye(3)[REJECT if speaking else CONTINUE]

        model.head_override = head
        out = []
        try:
            for i in range(12):
                x = audio[i * 2560 : (i + 1) * 2560]
                out.append(model.step(a, x).audio)
                if b is not None:
                    ev = model.step(b, x[::-1].copy()).events
                    if ev:
                        other_events.append((i, ev))
        finally:
            model.head_override = None
        return out

    alone, together = run(False), run(True)
    assert other_events == [(2, ["take_turn"]), (6, ["barge_in"])]
    assert sum(len(x) for x in alone[6:]) > 0  # session a kept talking through b's barge-in
    for x, y in zip(alone, together, strict=True):
        np.testing.assert_array_equal(x, y)


def test_emotion_from_reply_text():
    assert emotion_from_text("I'm so sorry to hear that.") == "sad"
    assert emotion_from_text("Wow, that is amazing!", {"surprised"}) == "surprised"
    assert emotion_from_text("Paris is the capital of France.") == "neutral"
    assert emotion_from_text("I'm sorry to hear that.", {"happy"}) == "neutral"  # no sad plugin loaded
