"""The asyncio runtime end to end on the tiny preset, on the virtual clock with fixed compute
costs, so the assertions are about WHEN things happen (deterministic timelines).

The tiny models are untrained, so the state head's decisions come from the scripted timeline
(``TimelineHead``: the label rules of training/data/labels.py applied to what the scripted user
actually said): what is under test is the runtime around the head, not the head.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
import torch

from agent.duplex_model import TextChunk
from duplex.clock import EventClock
from duplex.scripted_user import Say, TimelineHead, run_script
from duplex.session import DuplexAgentFactory
from duplex.workers import CostModel
from speech_io.wav import resample

COSTS = dict(listen=0.03, units=0.01, decode=0.02, begin_reply=0.01, generate=0.015, tts=0.04)


@pytest.fixture(scope="module")
def factory(tiny_cfg):
    from agent.duplex_model import load_duplex_model

    rt = dataclasses.replace(tiny_cfg.runtime, max_reply_s=3.0, max_tail_s=0.5, metrics_jsonl="")
    cfg = dataclasses.replace(tiny_cfg, runtime=rt)
    torch.set_num_threads(1)
    fac = DuplexAgentFactory(load_duplex_model(cfg), cfg, cost=CostModel.deterministic(**COSTS), watchdog=False)
    yield fac
    fac.close()


@pytest.fixture(scope="module")
def speech(voice):
    """Seeded Piper renderings at 16 kHz with word times: (audio, first word start, last word end)."""

    def render(text: str, seed: int) -> tuple[np.ndarray, float, float]:
        syn = voice.render(text, seed=seed)
        return resample(syn.audio, syn.sample_rate, 16000).astype(np.float32), syn.words[0].start, syn.words[-1].end

    return {
        "question": render("What is the capital of France?", 1),
        "bargein": render("Wait, tell me about Italy instead, please.", 2),
        "backchannel": render("Mm hmm.", 3),
    }


def _say(speech, name: str, **kw) -> Say:
    audio, ws, we = speech[name]
    return Say(audio, name=name, words_start=ws, words_end=we, **kw)


def _run(factory, script, **kw):
    from speech_io.webrtc.server import make_detector

    head = TimelineHead(kinds={"backchannel": "backchannel"})
    factory.model.head_override = head

    async def main():
        return await run_script(factory, script, EventClock(), detector=make_detector(factory.cfg.vad),
                                played=head.played, **kw)

    try:
        return asyncio.run(main())
    finally:
        factory.model.head_override = None


def _states(result) -> list[tuple[float, str]]:
    return [(round(e["t"], 3), e["state"]) for _, e in result.events if e["type"] == "state"]


def test_question_is_answered_on_a_deterministic_timeline(factory, speech):
    script = [_say(speech, "question", at=0.3)]
    a = _run(factory, script, max_s=12.0)
    b = _run(factory, script, max_s=12.0)
    assert _states(a) == _states(b)  # same input, same virtual timeline, however loaded the machine
    states = _states(a)
    assert [s for _, s in states] == ["listening", "thinking", "speaking", "listening"]
    q = a.played[0]
    t_think = states[1][0]
    # The head says "interrupt" on the first chunk ending 80 ms after the last word; the decision
    # exists one listening step (30 ms) after that chunk's end.
    chunk_end = np.ceil((q.speech_end + 0.08) / 0.16 - 1e-6) * 0.16
    assert t_think == pytest.approx(chunk_end + COSTS["listen"], abs=1e-6)
    [resp] = [e for _, e in a.events if e["type"] == "turn" and e["kind"] == "response"]
    assert sum(resp["parts"].values()) == pytest.approx(resp["ms"], abs=0.5)
    assert resp["parts"]["listen"] == pytest.approx(1000 * COSTS["listen"], abs=0.5)
    assert resp["trigger"] == "state_head"
    # Agent audio only after the question; "speaking" is announced with its first audible frame
    # (the session's own audibility level, -45 dBFS).
    first = np.flatnonzero(a.agent_activity())[0] * 0.01
    first_audible = np.flatnonzero(a.agent_activity(dbfs=-45.0))[0] * 0.01
    assert first >= q.speech_end and first_audible == pytest.approx(states[2][0], abs=0.03)
    assert any(e["type"] == "reply_done" for _, e in a.events)


def test_barge_in_stops_the_agent_within_200_ms_and_cancels_the_reply(factory, speech):
    script = [_say(speech, "question", at=0.3), _say(speech, "bargein", after_agent=0.6)]
    r = _run(factory, script, max_s=15.0)
    barge = r.played[1]
    [rec] = [e for _, e in r.events if e["type"] == "turn" and e["kind"] == "bargein"]
    assert rec["ms"] <= 200
    assert any(e["type"] == "policy" and e.get("action") == "cancel" for _, e in r.events)
    act = r.agent_activity()
    # The agent held the floor at the onset (a reply under way and heard; the random tiny generator
    # speaks in bursts, so not necessarily in the last 100 ms), silent from onset + 200 ms to the
    # end of the user's turn.
    states = _states(r)
    held = [s for t, s in states if t <= barge.speech_start]
    assert held[-1] == "speaking"
    spoke_at = max(t for t, s in states if s == "speaking" and t <= barge.speech_start)
    assert act[int(spoke_at * 100) : int(barge.speech_start * 100)].any()
    assert not act[int((barge.speech_start + 0.2) * 100) : int(barge.speech_end * 100)].any()
    # The interrupted reply's queued audio and units are gone: the next thing said is a new reply.
    replies = [e["reply"] for _, e in r.events if e["type"] == "reply_done"]
    assert 0 not in replies


def test_a_backchannel_does_not_stop_the_agent(factory, speech):
    script = [_say(speech, "question", at=0.3), _say(speech, "backchannel", after_agent=0.5)]
    r = _run(factory, script, max_s=15.0)
    kinds = [e.get("kind") or e.get("action") for _, e in r.events if e["type"] in ("turn", "policy")]
    assert "bargein" not in kinds and "cancel" not in kinds
    assert any(e["type"] == "reply_done" and e["reply"] == 0 for _, e in r.events)
    bc = r.played[1]
    act = r.agent_activity()
    assert act[int((bc.end + 0.3) * 100) :].any()  # still speaking after the mm-hm


def _with_runtime(factory, **changes):
    """Run a session test under changed runtime settings (sessions read them when created)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        saved = factory.cfg
        factory.cfg = dataclasses.replace(saved, runtime=dataclasses.replace(saved.runtime, **changes))
        try:
            yield
        finally:
            factory.cfg = saved

    return ctx()


def test_speculating_the_reply_in_the_silence_takes_the_llm_off_the_response_time(factory, speech):
    script = [_say(speech, "question", at=0.3)]
    # Lead-in quiet trimmed on both sides: the tiny decoder's onset varies with where in its unit
    # timeline speech starts, which would blur the comparison of when speech could start.
    with _with_runtime(factory, leading_quiet_trim=True):
        off = _run(factory, script, max_s=12.0)
    with _with_runtime(factory, speculate_tokens=6, leading_quiet_trim=True):
        on = _run(factory, script, max_s=12.0)

    def response(r):
        [rec] = [e for _, e in r.events if e["type"] == "turn" and e["kind"] == "response"]
        return rec

    # The head fires on the same chunk either way; with speculation the first words already exist.
    assert response(on)["parts"]["endpoint"] == pytest.approx(response(off)["parts"]["endpoint"])
    assert response(off)["parts"]["llm"] >= 1000 * (COSTS["begin_reply"] + 2 * COSTS["decode"]) - 0.5
    assert response(on)["parts"]["llm"] == pytest.approx(0.0, abs=0.5)
    assert response(on)["ms"] < response(off)["ms"] - 30
    # Same words: the reply decoded ahead of the turn is the reply.
    final = [[e["text"] for _, e in r.events if e["type"] == "text" and e["final"]] for r in (on, off)]
    assert final[0] == final[1] and len(final[0]) == 1


def test_a_longer_first_decoding_job_decodes_the_same_reply_in_fewer_jobs(factory, speech):
    """runtime.first_job_tokens: the first job decodes that many tokens, later ones tokens_per_job;
    same words, and never later (here no listening step falls between the default's two jobs)."""
    script = [_say(speech, "question", at=0.3)]
    jobs: dict[int, list[int]] = {}
    decode = factory.model.decode

    def counting(state, n, *a, **k):
        jobs.setdefault(first, []).append(n)
        return decode(state, n, *a, **k)

    runs = {}
    factory.model.decode = counting
    try:
        for first in (2, 4):
            with _with_runtime(factory, first_job_tokens=first, tokens_per_job=2):
                runs[first] = _run(factory, script, max_s=12.0)
    finally:
        factory.model.decode = decode
    assert jobs[2][:2] == [2, 2] and jobs[4][:2] == [4, 2]
    final = [[e["text"] for _, e in r.events if e["type"] == "text" and e["final"]] for r in runs.values()]
    assert final[0] == final[1] and len(final[0]) == 1
    [llm2, llm4] = [[e["parts"]["llm"] for _, e in r.events if e["type"] == "turn" and e["kind"] == "response"][0]
                    for r in runs.values()]
    assert llm4 <= llm2


def test_a_speculated_reply_is_dropped_unheard_when_the_user_speaks_on(factory, speech):
    audio, ws, we = speech["question"]
    # "What is the capital" ... 0.6 s ... "of France?": the head (a script oracle) keeps listening
    # through the pause, in which the agent speculates a reply that must be dropped unseen.
    cut = int(16000 * (ws + 0.55 * (we - ws)))
    first = Say(audio[:cut], at=0.3, name="part1")
    second = Say(audio[cut:], at=0.3 + cut / 16000 + 0.6, name="question")
    head = TimelineHead(kinds={"part1": "pause"})
    spec_jobs = factory.llm_worker.stats["begin_reply"].jobs
    factory.model.head_override = head
    from speech_io.webrtc.server import make_detector

    async def main():
        return await run_script(factory, [first, second], EventClock(), detector=make_detector(factory.cfg.vad),
                                played=head.played, max_s=14.0)

    try:
        with _with_runtime(factory, speculate_tokens=6):
            r = asyncio.run(main())
    finally:
        factory.model.head_override = None
    assert factory.llm_worker.stats["begin_reply"].jobs - spec_jobs >= 2  # one dropped, one taken
    second_end = r.played[1].speech_end
    texts = [(t, e) for t, e in r.events if e["type"] == "text" and e.get("role", "agent") == "agent"]
    assert texts and all(e["t"] >= second_end for _, e in texts)  # nothing of the dropped guess was shown
    turns = [e for _, e in r.events if e["type"] == "turn"]
    assert [e["kind"] for e in turns] == ["response"] and turns[0]["turn"] == 0
    assert [e["reply"] for _, e in r.events if e["type"] == "reply_done"] == [0]
    act = r.agent_activity()
    assert not act[: int(second_end * 100)].any()


def test_a_barge_in_without_a_pause_first_records_its_own_trigger(factory, speech):
    """With ducking off and a head that never confirms, the barge-in is the VAD's (``vad_long``) and
    the audio stops at the decision: the record says so (it used to say ``state_head`` whatever the
    policy's trigger was on this path)."""
    cfg = factory.cfg
    policy = dataclasses.replace(cfg.runtime.policy, duck_on_vad=False, bargein_threshold=1.01)
    factory.cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, policy=policy))
    try:
        r = _run(factory, [_say(speech, "question", at=0.3), _say(speech, "bargein", after_agent=0.6)], max_s=15.0)
    finally:
        factory.cfg = cfg
    [rec] = [e for _, e in r.events if e["type"] == "turn" and e["kind"] == "bargein"]
    assert rec["trigger"] == "vad_long"
    barge = r.played[1]
    # No pause while the VAD's run of activity builds up (bargein_max_s of active frames, the gaps
    # between words not counted): the agent talks on over it, then stops and stays silent.
    assert rec["ms"] >= 1000 * policy.bargein_max_s - 100
    act = r.agent_activity()
    assert not act[int((barge.speech_start + rec["ms"] / 1000 + 0.05) * 100) : int(barge.speech_end * 100)].any()


def test_one_sessions_barge_in_never_touches_another(factory, speech):
    from speech_io.webrtc.server import make_detector

    plain = [_say(speech, "question", at=0.3)]
    barged = [_say(speech, "question", at=0.3), _say(speech, "bargein", after_agent=0.4)]
    heads = {"a": TimelineHead(), "b": TimelineHead()}

    def head(state, k, speaking):
        return heads[state_ids[id(state)]](state, k, speaking)

    state_ids: dict[int, str] = {}

    async def main(both: bool):
        clock = EventClock()
        det = lambda: make_detector(factory.cfg.vad)  # noqa: E731
        orig = factory.create_session

        async def create(session_id, clk):
            s = await orig(session_id, clk)
            state_ids[id(s.st)] = session_id
            return s

        factory.create_session = create
        try:
            runs = [run_script(factory, plain, clock, detector=det(), session_id="b", played=heads["b"].played,
                               max_s=10.0)]
            if both:
                runs.append(run_script(factory, barged, clock, detector=det(), session_id="a",
                                       played=heads["a"].played, max_s=10.0))
            return await asyncio.gather(*runs)
        finally:
            del factory.create_session

    factory.model.head_override = head
    try:
        alone = asyncio.run(main(False))[0]
        heads = {"a": TimelineHead(), "b": TimelineHead()}
        b, a = asyncio.run(main(True))
    finally:
        factory.model.head_override = None

    def text(r):
        return [e["text"] for _, e in r.events if e["type"] == "text" and e["final"]]

    assert any(e.get("kind") == "bargein" for _, e in a.events if e["type"] == "turn")
    assert not any(e["type"] == "policy" for _, e in b.events)
    assert [s for _, s in _states(b)] == ["listening", "thinking", "speaking", "listening"]
    assert text(b) == text(alone)  # same reply, word for word
    barge = a.played[1].speech_start
    act = b.agent_activity()
    assert act[int(barge * 100) : int((barge + 0.5) * 100)].any()  # b kept talking through a's barge-in


def test_bench_duplex_reports_the_issue_keys(tiny_cfg):
    from duplex.bench import duplex as bench

    out = bench.run(tiny_cfg, n=1, head="oracle", realtime=False, progress=False)
    for key in ("response_ms_p50", "response_ms_p90", "bargein_stop_ms_p90", "backchannel_kept_rate",
                "pause_kept_rate", "rtf", "stalls_over_50ms", "max_realtime_sessions"):
        assert key in out
    assert out["response_ms_p50"] is not None and 0 < out["response_ms_p50"] < 5000
    assert out["rtf"] > 0 and out["questions"] == 1 and out["head"] == "oracle"
    assert (out["llm_dtype"], out["llm_weights"]) == ("float32", "fp16")  # what the runtime loads
    assert set(out["response_parts_ms_p50"]) == {"endpoint", "listen", "llm", "generator", "decoder", "playout"}
    assert len(out["pause_detail"]) == out["pause_cases"] == 1
    d = out["pause_detail"][0]
    assert d["kept"] == (d["heard_after_s"] is None) and 0.5 <= d["pause_s"] <= 1.0
    assert out["pause_turn_taken_rate"] == float(d["taken_after_s"] is not None)


def test_bench_bargein_stop_is_the_silence_that_lasts_to_the_end_of_the_interruption():
    from duplex.bench.duplex import _stop_after, _stop_through

    act = np.ones(400, bool)  # 10 ms hops, agent talking from 0 to 4 s
    act[110:130] = False  # paused 1.1-1.3 s (onset at 1.0), then talked over the user again
    act[200:] = False  # really stopped at 2.0 s; the user spoke until 3.0 s
    assert _stop_after(act, 1.0) == pytest.approx(1.1)  # the loose figure counts the pause
    assert _stop_through(act, 1.0, 3.0) == pytest.approx(2.0)
    act[200:] = True  # never stopped while the user talked: the first silence after the user ends
    act[320:] = False
    assert _stop_through(act, 1.0, 3.0) == pytest.approx(3.2)
    assert _stop_through(np.zeros(400, bool), 1.0, 3.0) == pytest.approx(1.0)


def test_tune_process_freezes_the_models_out_of_the_collector_until_close(tiny_cfg):
    """A full garbage collection walks every tracked object on the loop's thread; after tune_process
    the loaded models are no longer among them, and closing the factory gives them back."""
    import gc

    from agent.duplex_model import load_duplex_model

    fac = DuplexAgentFactory(load_duplex_model(tiny_cfg), tiny_cfg, watchdog=False)
    probe = fac.model.llm  # a long-lived object of the loaded agent

    def tracked() -> bool:
        return any(o is probe for o in gc.get_objects())

    assert tracked()
    fac.tune_process()
    try:
        assert gc.get_freeze_count() > 0 and not tracked()
    finally:
        fac.close()
    assert gc.get_freeze_count() == 0 and tracked()


def test_a_heard_reply_rides_on_listening_steps_and_says_the_same_words(factory, speech):
    """runtime.ride_after_tokens: once the reply is heard with that many tokens, its next tokens go
    through the LLM inside listening steps (``listen+decode`` jobs), one per step: same words,
    fewer decoding jobs. If no step carries a token (a session that sends no audio), the reply
    goes on decoding in jobs of its own."""
    script = [_say(speech, "question", at=0.3)]
    llm = factory.llm_worker
    runs, jobs = {}, {}
    listen_and_decode = factory.model.listen_and_decode

    def no_token(state, audio, speaking, reply_id):
        return factory.model.listen_chunks(state, audio, speaking), TextChunk([], None, "", False, 0.0)

    for name, after in (("own jobs", 0), ("riding", 2), ("no steps", 2)):
        before = {k: v.jobs for k, v in llm.stats.items()}
        if name == "no steps":
            factory.model.listen_and_decode = no_token
        # Decoding slow enough that the tiny reply (8 tokens) is not all decoded when it is heard.
        costs, llm.cost_model = llm.cost_model, CostModel.deterministic(**{**COSTS, "decode": 0.08})
        try:
            with _with_runtime(factory, ride_after_tokens=after):
                runs[name] = _run(factory, script, max_s=12.0)
        finally:
            factory.model.listen_and_decode = listen_and_decode
            llm.cost_model = costs
        jobs[name] = {k: v.jobs - before.get(k, 0) for k, v in llm.stats.items()}
    final = {n: [e["text"] for _, e in r.events if e["type"] == "text" and e["final"]] for n, r in runs.items()}
    assert final["riding"] == final["own jobs"] == final["no steps"] and len(final["own jobs"]) == 1
    assert jobs["own jobs"].get("listen+decode", 0) == 0
    assert jobs["riding"]["listen+decode"] >= 2
    assert jobs["riding"]["decode"] < jobs["own jobs"]["decode"]
    assert jobs["no steps"]["listen+decode"] >= 1 and jobs["no steps"]["decode"] >= jobs["riding"]["decode"]
