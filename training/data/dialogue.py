"""Two-channel dialogue timelines: text exchanges -> sample-accurate user/agent audio + segments.

Three stages, after SyncLLM's training stages:

* ``turn``: turn-based; each turn starts a fixed short gap after the other ends.
* ``duplex``: timed two-channel, gaps from a distribution (all positive), mid-turn user pauses.
* ``overlap``: gaps may be negative (overlaps), user backchannels during agent speech, barge-ins
  (the agent stops ``bargein_stop`` s after the user cuts in), lines addressed to someone else,
  coughs/knocks, background speech, stationary noise.

Everything is placed on an integer sample grid at ``cfg.sample_rate``; every segment time is
``sample / rate``, so labels computed from segments agree with the audio exactly. Segment
extents are speech extents: each rendering is trimmed of leading/trailing silence before it is
placed, so a turn's ``end`` is where its last word's sound stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from configs.schema import DataConfig
from speech_io.wav import resample
from training.data import augment as aug
from training.data.align import trim
from training.data.labels import REJECT_KINDS, Span, UserTurn, chunk_labels, labels_to_string, num_chunks
from training.data.manifest import Segment, WordTime, r6
from training.data.text_sources import (
    BACKCHANNELS,
    BARGEIN_OPENERS,
    FILLERS,
    SIDE_TALK,
    chatterbot_conversations,
    incomplete_cut_points,
)
from training.data.voices import AGENT_VOICE, Rendered, VoiceBank, VoiceSpec, train_user_voices

STAGES = ("turn", "duplex", "overlap")


@dataclass
class Exchange:
    user: str
    agent: str
    pause_cut: int | None = None
    """For template sentences: the word count after which a pause leaves the sentence unfinished."""


@dataclass
class DialoguePlan:
    id: str
    split: str
    stage: str
    seed: int
    user_voice: str
    exchanges: list[Exchange]
    agent_greeting: str | None = None
    source: str = ""


@dataclass
class Placed:
    audio: np.ndarray
    """Trimmed audio at the dialogue rate."""
    words: list[WordTime]
    """Seconds from the start of ``audio``."""


@dataclass
class Track:
    """One channel under construction: sample-placed clips (mixed at the end)."""

    rate: int
    clips: list[tuple[int, np.ndarray]] = field(default_factory=list)

    def add(self, start: int, audio: np.ndarray) -> None:
        self.clips.append((int(start), audio))

    def end(self) -> int:
        return max((s + len(a) for s, a in self.clips), default=0)

    def mix(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        for s, a in self.clips:
            m = min(len(a), n - s)
            if m > 0:
                out[s : s + m] += a[:m]
        return out


def to_rate(r: Rendered, rate: int) -> Placed:
    """Resample, trim silence, and move the word times with the trim."""
    audio = resample(r.audio, r.sample_rate, rate)
    trimmed, cut = trim(audio, rate)
    shift = cut / rate
    dur = len(trimmed) / rate
    words = []
    for w in r.words:
        s, e = min(max(w.start - shift, 0.0), dur), min(max(w.end - shift, 0.0), dur)
        words.append(WordTime(w.word, s, max(s, e)))
    if words:  # the sound's extent is the words' extent
        words[0] = WordTime(words[0].word, 0.0, words[0].end)
        words[-1] = WordTime(words[-1].word, words[-1].start, dur)
    return Placed(trimmed.astype(np.float32), words)


def fade(audio: np.ndarray, rate: int, ms: float = 5.0) -> np.ndarray:
    n = min(len(audio) // 2, int(rate * ms / 1000))
    if n <= 0:
        return audio
    out = audio.copy()
    ramp = np.linspace(0, 1, n, dtype=np.float32)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def cut_at_word(p: Placed, k: int, rate: int) -> tuple[Placed, Placed]:
    """Split after word k-1 at the quietest 5 ms inside the word boundary (+-20 ms)."""
    a_end, b_start = p.words[k - 1].end, p.words[k].start
    lo = max(1, int((min(a_end, b_start) - 0.02) * rate))
    hi = min(len(p.audio) - 1, int((max(a_end, b_start) + 0.02) * rate))
    hop = max(1, rate // 200)
    if hi - lo > hop:
        frames = (hi - lo) // hop
        e = np.mean(p.audio[lo : lo + frames * hop].reshape(frames, hop) ** 2, axis=1)
        c = lo + int(np.argmin(e)) * hop + hop // 2
    else:
        c = lo
    first, second = p.audio[:c], p.audio[c:]
    t1, c2 = trim(second, rate)
    shift = (c + c2) / rate
    w1 = [WordTime(w.word, w.start, min(w.end, c / rate)) for w in p.words[:k]]
    w2 = [WordTime(w.word, max(0.0, w.start - shift), max(0.0, w.end - shift)) for w in p.words[k:]]
    t0, _ = trim(first, rate)
    if w1:
        w1[-1] = WordTime(w1[-1].word, w1[-1].start, len(t0) / rate)
    if w2:
        w2[0] = WordTime(w2[0].word, 0.0, w2[0].end)
    return Placed(fade(t0, rate), w1), Placed(fade(t1, rate), w2)


def _synth_noise_burst(rate: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A cough, a knock or a clatter: short non-speech sounds the state head must ignore."""
    from scipy.signal import butter, sosfilt

    kind = str(rng.choice(["cough", "knock", "clatter"]))
    if kind == "cough":
        parts = []
        for _ in range(int(rng.integers(1, 3))):
            n = int(rng.uniform(0.12, 0.25) * rate)
            t = np.arange(n) / rate
            env = np.minimum(t / 0.01, 1.0) * np.exp(-t / rng.uniform(0.04, 0.09))
            sos = butter(2, [rng.uniform(250, 500), rng.uniform(2000, 3500)], btype="band", fs=rate, output="sos")
            parts += [sosfilt(sos, rng.standard_normal(n)) * env, np.zeros(int(rng.uniform(0.08, 0.2) * rate))]
        x = np.concatenate(parts[:-1])
    elif kind == "knock":
        parts = []
        for _ in range(int(rng.integers(2, 5))):
            n = int(0.06 * rate)
            t = np.arange(n) / rate
            f = rng.uniform(150, 400)
            parts += [np.sin(2 * np.pi * f * t) * np.exp(-t / 0.012) + 0.2 * rng.standard_normal(n) * np.exp(-t / 0.004),
                      np.zeros(int(rng.uniform(0.12, 0.22) * rate))]
        x = np.concatenate(parts[:-1])
    else:
        n = int(rng.uniform(0.2, 0.5) * rate)
        t = np.arange(n) / rate
        x = rng.standard_normal(n) * np.exp(-t / rng.uniform(0.03, 0.1))
    x = x / (np.max(np.abs(x)) + 1e-9) * rng.uniform(0.2, 0.6)
    return kind, x.astype(np.float32)


class DialogueBuilder:
    """Renders one `DialoguePlan`; randomness only from ``plan.seed`` (so builds are reproducible)."""

    def __init__(self, bank: VoiceBank, cfg: DataConfig) -> None:
        self.bank = bank
        self.cfg = cfg
        self.rate = cfg.sample_rate

    # -- rendering helpers ---------------------------------------------------------------
    def _render(self, spec: VoiceSpec, text: str, seed: int, emotion: str = "neutral", rng: np.random.Generator | None = None) -> Placed:
        r = self.bank.render(spec, text, seed)
        if emotion != "neutral" and rng is not None:
            from training.data.emotion import emotion_prosody, render_emotions

            p = emotion_prosody(emotion, rng)
            audio = render_emotions(r.audio, r.sample_rate, {emotion: p})[emotion]
            words = [WordTime(w.word, w.start / p.rate, w.end / p.rate) for w in r.words]
            r = Rendered(audio, r.sample_rate, words)
        return to_rate(r, self.rate)

    def _gap(self, rng: np.random.Generator, stage: str) -> float:
        c = self.cfg
        if stage == "turn":
            return c.turn_gap
        g = float(rng.normal(c.gap_mean, c.gap_std))
        lo = 0.1 if stage == "duplex" else c.gap_min
        return float(np.clip(g, lo, c.gap_max))

    def build(self, plan: DialoguePlan) -> tuple[np.ndarray, list[Segment], dict[str, Any], str]:
        """-> (stereo (T, 2) float32 [user, agent], segments, augment record, labels string)."""
        rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 7]))
        cfg, rate, stage = self.cfg, self.rate, plan.stage
        user = VoiceSpec.parse(plan.user_voice)
        ut, at = Track(rate), Track(rate)
        segs: list[Segment] = []
        sub = iter(range(1, 10_000))

        def seed() -> int:
            return int(np.random.SeedSequence([plan.seed, next(sub)]).generate_state(1)[0])

        def sec(n: int) -> float:
            return r6(n / rate)

        def samples(t: float) -> int:
            return int(round(t * rate))

        def words_at(p: Placed, start: int) -> list[WordTime]:
            return [WordTime(w.word, sec(start + samples(w.start)), sec(start + samples(w.end))) for w in p.words]

        def user_event(kind: str, text: str, start: int, spec: VoiceSpec, level_db: float = 0.0) -> int:
            p = self._render(spec, text, seed())
            audio = fade(p.audio, rate) * np.float32(10 ** (level_db / 20))
            ut.add(start, audio)
            segs.append(Segment("user", kind, sec(start), sec(start + len(audio)), text=text,
                                words=words_at(p, start), voice=spec.id))
            return start + len(audio)

        cursor = samples(rng.uniform(0.3, 1.0))
        last_agent: int | None = None  # index in segs
        agent_audio: dict[int, tuple[int, np.ndarray, Placed]] = {}
        bc_end = 0  # end of the last backchannel (a barge-in starts after it)
        replies_to: dict[int, Segment] = {}

        def agent_turn(text: str, start: int, reply_to: int | None) -> int:
            emotion = "neutral"
            if stage != "turn" and rng.random() < 0.2:
                emotion = str(rng.choice(["happy", "sad", "angry", "surprised"]))
            p = self._render(AGENT_VOICE, text, seed(), emotion, rng)
            audio = fade(p.audio, rate)
            at.add(start, audio)
            segs.append(Segment("agent", "turn", sec(start), sec(start + len(audio)), text=text,
                                words=words_at(p, start), voice=AGENT_VOICE.id, emotion=emotion, reply_to=reply_to))
            agent_audio[len(segs) - 1] = (start, audio, p)
            return start + len(audio)

        if plan.agent_greeting:
            cursor = agent_turn(plan.agent_greeting, cursor, None)
            last_agent = len(segs) - 1
            cursor += samples(self._gap(rng, stage))

        for ex in plan.exchanges:
            bargein = False
            text = ex.user
            start = 0
            if stage == "overlap" and last_agent is not None and rng.random() < cfg.bargein_prob:
                a_start, a_audio, _ = agent_audio[last_agent]
                lo = max(a_start + samples(0.6), bc_end + samples(0.3))
                hi = a_start + len(a_audio) - samples(0.8)
                if hi > lo:
                    bargein = True
                    body = ex.user if ex.user.startswith("I ") else ex.user[0].lower() + ex.user[1:]
                    text = f"{rng.choice(BARGEIN_OPENERS)}, {body}"
                    start = int(rng.integers(lo, hi))
            events_end = 0
            if stage == "overlap" and not bargein:
                # Things on the user channel that are not a turn, before the user's next turn.
                t = cursor + samples(rng.uniform(0.3, 0.8))
                if rng.random() < cfg.side_talk_prob:
                    t = user_event("side", str(rng.choice(SIDE_TALK)), t, user) + samples(rng.uniform(0.5, 1.2))
                    events_end = t
                if rng.random() < cfg.noise_burst_prob:
                    kind, x = _synth_noise_burst(rate, rng)
                    ut.add(t, x)
                    segs.append(Segment("user", "noise", sec(t), sec(t + len(x)), text=f"<{kind}>"))
                    t += len(x) + samples(rng.uniform(0.4, 1.0))
                    events_end = t
                if rng.random() < cfg.background_prob:
                    bg = str(rng.choice(_background_lines()))
                    pool = [v for v in train_user_voices() if v.engine == "espeak" and v.id != user.id]
                    spec = pool[int(rng.integers(len(pool)))]
                    t = user_event("background", bg, t, spec, level_db=float(rng.uniform(-20, -12)))
                    events_end = t + samples(rng.uniform(0.4, 1.0))

            # The user's turn (maybe a barge-in, maybe with a mid-turn pause, maybe a filler).
            cut_shift = 0
            if stage != "turn" and not bargein and rng.random() < 0.12:
                lead = str(rng.choice(FILLERS[:4]))  # one-word fillers: "um, what is ..."
                text = f"{lead}, {text[0].lower() + text[1:] if not text.startswith('I ') else text}"
                cut_shift = 1
            p = self._render(user, text, seed())
            parts = [p]
            if stage != "turn" and rng.random() < cfg.pause_prob and len(p.words) >= 4:
                cuts = incomplete_cut_points(" ".join(w.word for w in p.words))
                if ex.pause_cut is not None and not bargein and ex.pause_cut + cut_shift < len(p.words) - 1:
                    cuts = [ex.pause_cut + cut_shift]
                if cuts:
                    parts = list(cut_at_word(p, int(rng.choice(cuts)), rate))
            if bargein:
                # The agent stops shortly after the user cuts in: its audio and words end there.
                assert last_agent is not None
                stop = start + samples(cfg.bargein_stop + rng.uniform(-0.05, 0.1))
                a_start, a_audio, _ = agent_audio[last_agent]
                keep = max(0, stop - a_start)
                cut_clip = fade(a_audio[:keep], rate, 20.0)
                at.clips = [(s0, cut_clip if s0 == a_start else a) for s0, a in at.clips]
                seg = segs[last_agent]
                seg.end = sec(a_start + keep)
                seg.words = [w for w in seg.words if w.end <= seg.end]
                seg.truncated = True
            else:
                gap = self._gap(rng, stage)
                prev_end = samples(segs[last_agent].end) if last_agent is not None else cursor
                start = max(prev_end + samples(gap), events_end, ut.end() + samples(0.2))
            words: list[WordTime] = []
            pauses: list[list[float]] = []
            pos = start
            for i, part in enumerate(parts):
                if i:
                    pause = samples(rng.uniform(cfg.pause_min, cfg.pause_max))
                    if pause > samples(0.8) and rng.random() < 0.3:
                        # "I was thinking about ... um ... going to the park": a filler inside the
                        # pause; the user still holds the floor.
                        filler = self._render(user, str(rng.choice(FILLERS[:2])), seed())
                        first = samples(rng.uniform(0.2, 0.4))
                        rest = max(samples(0.2), pause - first - len(filler.audio))
                        pauses.append([sec(pos), sec(pos + first)])
                        pos += first
                        ut.add(pos, fade(filler.audio, rate))
                        words += words_at(filler, pos)
                        pos += len(filler.audio)
                        pause = rest
                    pauses.append([sec(pos), sec(pos + pause)])
                    pos += pause
                ut.add(pos, part.audio)
                words += words_at(part, pos)
                pos += len(part.audio)
            user_seg = Segment("user", "turn", sec(start), sec(pos), text=text, words=words, voice=user.id,
                               pauses=pauses, bargein=bargein)
            segs.append(user_seg)
            # The agent's reply (reply_to is fixed up to an index after sorting).
            gap = self._gap(rng, stage)
            reply = max(pos + samples(gap), start + int(0.6 * (pos - start)), at.end() + samples(0.1))
            cursor = agent_turn(ex.agent, reply, None)
            last_agent = len(segs) - 1
            replies_to[id(segs[-1])] = user_seg
            if stage == "overlap" and rng.random() < cfg.backchannel_prob and cursor - reply > samples(2.2):
                label, spoken = BACKCHANNELS[int(rng.integers(len(BACKCHANNELS)))]
                b_start = int(rng.integers(reply + samples(0.8), cursor - samples(1.2)))
                bc_end = user_event("backchannel", spoken, b_start, user)
                segs[-1].text = label
            cursor = max(cursor, ut.end())

        n = max(ut.end(), at.end()) + samples(rng.uniform(0.5, 1.5))
        u, a = ut.mix(n), at.mix(n)
        u, record = self._channel_effects(u, rng, stage)
        stereo = np.stack([np.clip(u, -1, 1), np.clip(a, -1, 1)], axis=1).astype(np.float32)
        order = sorted(range(len(segs)), key=lambda i: (segs[i].start, segs[i].channel))
        index = {id(segs[i]): k for k, i in enumerate(order)}
        segs = [segs[i] for i in order]
        for sg in segs:
            if id(sg) in replies_to:
                sg.reply_to = index[id(replies_to[id(sg)])]
        labels = labels_for(segs, n, rate, cfg.chunk_seconds)
        return stereo, segs, record, labels

    def _channel_effects(self, u: np.ndarray, rng: np.random.Generator, stage: str) -> tuple[np.ndarray, dict[str, Any]]:
        """Room, stationary noise and codec on the user channel (the agent channel stays clean)."""
        if stage == "turn" or rng.random() >= self.cfg.augment_prob:
            return u, {}
        chain = aug.random_chain(rng, 1.0, allow_speed=False)
        chain.pitch_semitones = 0.0  # per-turn pitch would move word times; voices differ enough
        babble = None
        if chain.noise == "babble":
            babble = self._babble(rng, len(u))
        level = aug.active_rms(u)
        if chain.noise:
            chain.snr_db = float(rng.uniform(15, 35))
        out = aug.apply_chain(u, self.rate, aug.Chain(gain_db=chain.gain_db, rt60=chain.rt60, opus_bitrate=0), rng)
        if chain.noise:
            nz = {"white": aug.white_noise, "pink": aug.pink_noise}.get(chain.noise)
            noise = nz(len(out), rng) if nz else babble
            out = aug.add_noise(out, noise, chain.snr_db, reference_rms=level * (10 ** (chain.gain_db / 20)))
        if chain.opus_bitrate:
            out = aug.opus_roundtrip(out, self.rate, chain.opus_bitrate)
        return out.astype(np.float32), chain.as_dict()

    def _babble(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Several other talkers at once (espeak voices reading corpus lines), looped to length."""
        voices = train_user_voices()
        mix = np.zeros(0, np.float32)
        for _ in range(4):
            spec = voices[int(rng.integers(len(voices)))]
            if spec.engine != "espeak":
                continue
            lines = " ".join(str(rng.choice(_background_lines())) for _ in range(3))
            x = self._render(spec, lines, 0).audio
            x = x / (aug.rms(x) + 1e-9)
            if len(mix) < len(x):
                mix = np.pad(mix, (0, len(x) - len(mix)))
            mix[: len(x)] += x
        return mix if len(mix) else aug.pink_noise(n, rng)


def _background_lines() -> list[str]:
    convs = chatterbot_conversations()
    return [line for c in convs[:: max(1, len(convs) // 200)] for line in c.lines[:1]]


def labels_for(segs: list[Segment], n_samples: int, rate: int, chunk: float) -> str:
    """The state labels of a finished timeline (rules in training/data/labels.py)."""
    user_turns = []
    for i, t in enumerate(segs):
        if t.channel == "user" and t.kind == "turn":
            replies = [a.start for a in segs if a.channel == "agent" and a.reply_to == i]
            user_turns.append(UserTurn(t.start, t.end, min(replies) if replies else None))
    rejects = [Span(s.start, s.end) for s in segs if s.channel == "user" and s.kind in REJECT_KINDS]
    spans = [Span(a.start, a.end) for a in segs if a.channel == "agent"]
    labels = chunk_labels(num_chunks(n_samples, rate, chunk), user_turns, rejects, spans, chunk=chunk)
    return labels_to_string(labels)
