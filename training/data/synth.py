"""`duplex-agent data synth`: plan -> jobs -> per-item records -> manifests + data card.

Resumable and reproducible by construction:

* The plan (every item's id, text, voice, stage and seed) is a pure function of the config and
  ``--seed``; it is saved as ``plan.json``. A rerun into the same folder with another plan is
  refused (one line, no damage).
* Each job writes its audio (atomically: temp file + rename) and then its record
  ``items/<job>.json`` (also atomic). The record is the "done" mark: a killed run leaves at most
  temp files (removed on restart) and jobs without records (redone from scratch).
* Item randomness comes from the item's own seed, never from run order or worker, so a restarted
  run, or one with a different number of workers, gives the same bytes.
* Manifests are assembled at the end from the records, sorted by id.

Phase 1 asks the frozen LLM for its answers to the planned prompts (they are dialogue turns and
QA targets); phase 2 renders audio.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from configs.schema import AgentConfig
from training.data.manifest import (
    EMOTIONS,
    QAItem,
    Record,
    Utterance,
    WordTime,
    atomic_write_text,
    r6,
    write_manifest,
)
from training.data.text_sources import (
    all_questions,
    chatterbot_conversations,
    pause_sentences,
    spoken_answer,
    stable_hash,
    text_split,
)

PLAN_VERSION = 1
GREETINGS = ("Hi, how can I help you today?", "Hello! What can I do for you?", "Hey there, what's on your mind?",
             "Good to hear from you. What would you like to talk about?")


class PlanMismatchError(ValueError):
    """The output folder holds a dataset made with another plan."""


@dataclass
class Job:
    id: str
    kind: str
    """``answer`` | ``utt`` | ``qa`` | ``dlg`` | ``emo``."""
    seed: int
    payload: dict[str, Any] = field(default_factory=dict)


def item_seed(seed: int, item_id: str) -> int:
    return stable_hash("item", seed, item_id) % (2**62)


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------

@dataclass
class TextPools:
    """Text by split: conversations, single lines, prompts for the LLM."""

    conversations: dict[str, list[tuple[str, tuple[str, ...]]]]
    lines: dict[str, list[tuple[str, str]]]
    prompts: dict[str, list[tuple[str, str, int | None]]]
    """(id, text, pause cut or None)."""


def text_pools(cfg: AgentConfig) -> TextPools:
    d = cfg.data
    conv: dict[str, list] = {s: [] for s in ("train", "val", "test")}
    lines: dict[str, list] = {s: [] for s in ("train", "val", "test")}
    for c in chatterbot_conversations():
        sp = text_split(c.id, d.val_text_fraction, d.test_text_fraction)
        conv[sp].append((c.id, c.lines))
        # Single utterances are whole sentences (>= 3 words), as in TTS/ASR corpora; dialogues keep
        # the short lines ("Hi", "Tell me a joke").
        lines[sp] += [(f"{c.id}#{j}", line) for j, line in enumerate(c.lines) if len(line.split()) >= 3]
    prompts: dict[str, list] = {s: [] for s in ("train", "val", "test")}
    for pid, q in all_questions():
        prompts[text_split(pid, d.val_text_fraction, d.test_text_fraction)].append((pid, q, None))
    for pid, sentence, cut in pause_sentences():
        sp = text_split(pid, d.val_text_fraction, d.test_text_fraction)
        prompts[sp].append((pid, sentence, cut))
        lines[sp].append((pid, sentence))
    return TextPools(conv, lines, prompts)


def _split_counts(total: int, d: Any) -> dict[str, int]:
    test = int(round(total * d.test_text_fraction))
    val = int(round(total * d.val_text_fraction))
    if total >= 3:
        test, val = max(test, 1), max(val, 1)
    return {"train": max(0, total - test - val), "val": val, "test": test}


def _pick(rng: np.random.Generator, pool: list, n: int) -> list:
    if not pool or n <= 0:
        return []
    idx = rng.permutation(len(pool))
    reps = int(np.ceil(n / len(pool)))
    order = np.concatenate([idx] * reps)[:n] if reps > 1 else idx[:n]
    return [pool[int(i)] for i in order]


def _voice_for(rng: np.random.Generator, split: str) -> str:
    from training.data.voices import heldout_user_voices, train_user_voices

    pool = heldout_user_voices() if split == "test" else train_user_voices()
    return pool[int(rng.integers(len(pool)))].id


def plan_answers(cfg: AgentConfig, seed: int) -> list[Job]:
    """The prompts the LLM answers: a seeded sample per split (questions and pause sentences)."""
    d = cfg.data
    pools = text_pools(cfg)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    jobs = []
    for split, n in _split_counts(d.qa_questions, d).items():
        for pid, text, cut in _pick(rng, pools.prompts[split], n):
            jobs.append(Job(f"ans-{_safe(pid)}", "answer", 0,
                            {"prompt_id": pid, "text": text, "split": split, "cut": cut}))
    # Sampling with replacement can repeat a prompt when the pool is small: keep one job per id.
    return list({j.id: j for j in jobs}.values())


def _safe(text_id: str) -> str:
    return text_id.replace(":", "_").replace("/", "_").replace("#", "_")


def plan_items(cfg: AgentConfig, seed: int, answers: dict[str, dict[str, Any]]) -> list[Job]:
    """Every audio job, given the LLM's answers (``answers[job_id] = {"text", "answer", ...}``)."""
    from training.data.voices import AGENT_VOICE_ID, pitch_level, train_user_voices

    d = cfg.data
    pools = text_pools(cfg)
    jobs: list[Job] = []
    by_split: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    for aid in sorted(answers):
        a = answers[aid]
        if a.get("answer_spoken"):
            by_split[a["split"]].append(dict(a, job=aid))

    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    for role, total in (("agent", d.agent_utterances), ("user", d.user_utterances)):
        k = 0
        for split, n in _split_counts(total, d).items():
            for tid, text in _pick(rng, pools.lines[split], n):
                uid = f"utt-{role[0]}-{k:05d}"
                voice = AGENT_VOICE_ID if role == "agent" else _voice_for(rng, split)
                jobs.append(Job(uid, "utt", item_seed(seed, uid),
                                {"role": role, "text": text, "source": tid, "split": split, "voice": voice}))
                k += 1

    for i, aid in enumerate(sorted(answers)):
        a = answers[aid]
        qid = f"qa-{i:04d}"
        voices = [_voice_for(rng, a["split"]) for _ in range(d.qa_voices_per_question)]
        jobs.append(Job(qid, "qa", item_seed(seed, qid), {"answer_job": aid, "voices": voices}))

    for stage, count in (("turn", d.turn_dialogues), ("duplex", d.duplex_dialogues), ("overlap", d.overlap_dialogues)):
        for i in range(count):
            did = f"dlg-{stage}-{i:04d}"
            split = text_split(f"{seed}/{did}", d.val_text_fraction, d.test_text_fraction)
            plan = _dialogue_plan(rng, did, split, stage, item_seed(seed, did), pools, by_split[split], d.dialogue_seconds)
            jobs.append(Job(did, "dlg", plan.seed, {"plan": dataclasses.asdict(plan)}))

    voices = list(train_user_voices())  # held-out user voices stay out of every training set
    # Halves alternate along each engine's pitch ranking, so both span low to high voices (a
    # classifier trained on low voices only would call every high voice "happy").
    chosen = sorted(_pick(rng, voices, min(d.emotion_other_voices, len(voices))), key=lambda v: (v.engine, pitch_level(v), v.id))
    halves = {AGENT_VOICE_ID: "A"}
    for j, v in enumerate(chosen):
        halves[v.id] = "B" if j % 2 == 0 else "A"
    groups = [(AGENT_VOICE_ID, d.emotion_texts)] + [(v.id, d.emotion_texts_per_other_voice) for v in chosen]
    g = 0
    for voice, n in groups:
        for split, m in _split_counts(n, d).items():
            for tid, text in _pick(rng, pools.lines[split], m):
                eid = f"emo-{g:05d}"
                jobs.append(Job(eid, "emo", item_seed(seed, eid),
                                {"voice": voice, "half": halves[voice], "text": text, "source": tid, "split": split}))
                g += 1
    return jobs


def _dialogue_plan(rng: np.random.Generator, did: str, split: str, stage: str, seed: int, pools: TextPools,
                   answered: list[dict[str, Any]], target_s: float) -> Any:
    from training.data.dialogue import DialoguePlan, Exchange

    exchanges: list[Exchange] = []
    sources: list[str] = []
    est = 0.0
    greeting = str(rng.choice(GREETINGS)) if rng.random() < 0.3 else None
    if greeting:
        est += len(greeting.split()) / 2.6 + 0.5
    convs = pools.conversations[split]
    guard = 0
    while est < target_s and guard < 50:
        guard += 1
        if answered and (rng.random() < 0.5 or not convs):
            a = answered[int(rng.integers(len(answered)))]
            pairs = [(a["text"], a["answer_spoken"], a.get("cut"))]
            sources.append(a["prompt_id"])
        elif convs:
            cid, lines = convs[int(rng.integers(len(convs)))]
            pairs = [(lines[i], lines[i + 1], None) for i in range(0, len(lines) - 1, 2)]
            sources.append(cid)
        else:
            break
        for u, a_text, cut in pairs:
            exchanges.append(Exchange(user=u, agent=a_text, pause_cut=cut))
            est += (len(u.split()) + len(a_text.split())) / 2.6 + 1.2
            if est >= target_s:
                break
    return DialoguePlan(id=did, split=split, stage=stage, seed=seed, user_voice=_voice_for(rng, split),
                        exchanges=exchanges, agent_greeting=greeting, source=" ".join(sources))


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------

class WorkerContext:
    """What one worker process holds: the voices, lazily the LLM, the output folder."""

    def __init__(self, cfg: AgentConfig, out: Path) -> None:
        import torch

        from training.data.voices import VoiceBank

        torch.set_num_threads(1)
        self.cfg = cfg
        self.out = out
        self.bank = VoiceBank(cfg.voice)
        self._llm = None

    @property
    def llm(self):
        if self._llm is None:
            from agent.llm import load_llm

            self._llm = load_llm(self.cfg.llm)
        return self._llm


_CTX: WorkerContext | None = None  # one per worker process (set by the pool initializer)


def _init_worker(cfg: AgentConfig, out: str) -> None:
    global _CTX
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _CTX = WorkerContext(cfg, Path(out))


def _run_in_worker(job: Job) -> tuple[str, float]:
    assert _CTX is not None
    return run_job(_CTX, job)


def run_job(ctx: WorkerContext, job: Job) -> tuple[str, float]:
    """Do one job; returns (job id, seconds of audio written)."""
    fn: Callable[[WorkerContext, Job], tuple[list[dict[str, Any]], float]] = {
        "answer": _job_answer, "utt": _job_utt, "qa": _job_qa, "dlg": _job_dialogue, "emo": _job_emotion,
    }[job.kind]
    c0 = _cpu_with_children()
    records, seconds = fn(ctx, job)
    # cpu_s (this process + the espeak-ng programs it ran) is for throughput accounting only;
    # manifests never include it, so they stay byte-stable.
    atomic_write_text(ctx.out / "items" / f"{job.id}.json", json.dumps(
        {"job": job.id, "kind": job.kind, "records": records, "seconds": r6(seconds),
         "cpu_s": round(_cpu_with_children() - c0, 3)}, sort_keys=True, indent=0))
    return job.id, seconds


def _cpu_with_children() -> float:
    """CPU seconds of this process plus its finished child processes (espeak-ng)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ru.ru_utime + ru.ru_stime


def _write(ctx: WorkerContext, rel: str, audio: np.ndarray, rate: int) -> None:
    from speech_io.wav import write_wav

    write_wav(ctx.out / rel, audio, rate)


def _words(ws: Iterable[WordTime], scale: float = 1.0) -> list[WordTime]:
    return [WordTime(w.word, r6(w.start * scale), r6(w.end * scale)) for w in ws]


def _job_answer(ctx: WorkerContext, job: Job) -> tuple[list[dict[str, Any]], float]:
    p = job.payload
    answer = "".join(ctx.llm.answer(p["text"], max_new_tokens=ctx.cfg.data.qa_max_new_tokens)).strip()
    spoken, truncated = spoken_answer(answer)
    rec = dict(p, answer=answer, answer_spoken=spoken, answer_truncated=truncated, llm=ctx.cfg.llm.card)
    return [rec], 0.0


def _augmented_user(ctx: WorkerContext, voice: str, text: str, seed: int, split: str, rng: np.random.Generator,
                    rate: int) -> tuple[np.ndarray, list[WordTime], dict[str, Any]]:
    """A user-voice rendering at ``rate``, augmented in the train split."""
    from speech_io.wav import resample
    from training.data import augment as aug
    from training.data.voices import VoiceSpec

    r = ctx.bank.render(VoiceSpec.parse(voice), text, seed)
    chain = aug.random_chain(rng, ctx.cfg.data.augment_prob) if split == "train" else aug.Chain()
    babble = None
    if chain.noise == "babble":
        from training.data.dialogue import DialogueBuilder

        builder = DialogueBuilder(ctx.bank, ctx.cfg.data)
        babble = resample(builder._babble(rng, len(r.audio)), builder.rate, r.sample_rate)
    audio = aug.apply_chain(r.audio, r.sample_rate, chain, rng, babble=babble)
    audio = resample(audio, r.sample_rate, rate)
    return audio, _words(r.words, 1.0 / chain.speed), chain.as_dict()


def _job_utt(ctx: WorkerContext, job: Job) -> tuple[list[dict[str, Any]], float]:
    from training.data.voices import AGENT_VOICE, is_heldout

    p = job.payload
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, 1]))
    rel = f"audio/utt/{job.id}.wav"
    if p["role"] == "agent":
        r = ctx.bank.render(AGENT_VOICE, p["text"], job.seed)
        audio, rate, words, augment = r.audio, r.sample_rate, _words(r.words), {}
    else:
        rate = ctx.cfg.data.sample_rate
        audio, words, augment = _augmented_user(ctx, p["voice"], p["text"], job.seed, p["split"], rng, rate)
    _write(ctx, rel, audio, rate)
    u = Utterance(id=job.id, split=p["split"], role=p["role"], voice=p["voice"], heldout_voice=is_heldout(p["voice"]),
                  text=p["text"], audio=rel, sample_rate=rate, duration=r6(len(audio) / rate), words=words,
                  augment=augment, source=p["source"])
    return [u.to_json()], len(audio) / rate


def _load_answer(ctx: WorkerContext, job_id: str) -> dict[str, Any]:
    return json.loads((ctx.out / "items" / f"{job_id}.json").read_text())["records"][0]


def _job_qa(ctx: WorkerContext, job: Job) -> tuple[list[dict[str, Any]], float]:
    from training.data.voices import AGENT_VOICE, is_heldout

    a = _load_answer(ctx, job.payload["answer_job"])
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, 1]))
    seconds = 0.0
    answer_rel, answer_rate, answer_dur, answer_words = "", 0, 0.0, []
    if a["answer_spoken"]:
        r = ctx.bank.render(AGENT_VOICE, a["answer_spoken"], job.seed)
        answer_rel = f"audio/qa/{job.id}-answer.wav"
        _write(ctx, answer_rel, r.audio, r.sample_rate)
        answer_rate, answer_dur, answer_words = r.sample_rate, r6(r.seconds), _words(r.words)
        seconds += r.seconds
    records = []
    rate = ctx.cfg.data.sample_rate
    for k, voice in enumerate(job.payload["voices"]):
        audio, words, augment = _augmented_user(ctx, voice, a["text"], job.seed + 1 + k, a["split"], rng, rate)
        rel = f"audio/qa/{job.id}-{k}.wav"
        _write(ctx, rel, audio, rate)
        seconds += len(audio) / rate
        q = QAItem(id=f"{job.id}-{k}", split=a["split"], question=a["text"], question_audio=rel, question_sample_rate=rate,
                   question_duration=r6(len(audio) / rate), question_words=words, voice=voice,
                   heldout_voice=is_heldout(voice), augment=augment, answer=a["answer"], answer_spoken=a["answer_spoken"],
                   answer_audio=answer_rel, answer_sample_rate=answer_rate, answer_duration=answer_dur,
                   answer_words=answer_words, llm=a["llm"], extra={"prompt_id": a["prompt_id"],
                                                                   "answer_truncated": a["answer_truncated"]})
        records.append(q.to_json())
    return records, seconds


def _job_dialogue(ctx: WorkerContext, job: Job) -> tuple[list[dict[str, Any]], float]:
    from training.data.dialogue import DialogueBuilder, DialoguePlan, Exchange
    from training.data.manifest import Dialogue
    from training.data.voices import AGENT_VOICE_ID, is_heldout

    raw = dict(job.payload["plan"])
    raw["exchanges"] = [Exchange(**e) for e in raw["exchanges"]]
    plan = DialoguePlan(**raw)
    stereo, segs, augment, labels = DialogueBuilder(ctx.bank, ctx.cfg.data).build(plan)
    rate = ctx.cfg.data.sample_rate
    rel = f"audio/dlg/{job.id}.wav"
    _write(ctx, rel, stereo, rate)
    d = Dialogue(id=job.id, split=plan.split, stage=plan.stage, audio=rel, sample_rate=rate,
                 duration=r6(len(stereo) / rate), chunk_seconds=ctx.cfg.data.chunk_seconds, labels=labels,
                 segments=segs, user_voice=plan.user_voice, agent_voice=AGENT_VOICE_ID,
                 heldout_voice=is_heldout(plan.user_voice), augment=augment, source=plan.source)
    return [d.to_json()], len(stereo) / rate


def _job_emotion(ctx: WorkerContext, job: Job) -> tuple[list[dict[str, Any]], float]:
    from training.data.emotion import emotion_prosody, render_emotions
    from training.data.manifest import EmotionUtterance
    from training.data.voices import VoiceSpec

    p = job.payload
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, 1]))
    r = ctx.bank.render(VoiceSpec.parse(p["voice"]), p["text"], job.seed)
    prosody = {e: emotion_prosody(e, rng) for e in EMOTIONS}
    audios = render_emotions(r.audio, r.sample_rate, prosody)
    records, seconds = [], 0.0
    for e in EMOTIONS:
        rel = f"audio/emo/{job.id}-{e}.wav"
        _write(ctx, rel, audios[e], r.sample_rate)
        seconds += len(audios[e]) / r.sample_rate
        rec = EmotionUtterance(id=f"{job.id}-{e}", split=p["split"], group=job.id, emotion=e, voice=p["voice"],
                               voice_half=p["half"], text=p["text"], audio=rel, sample_rate=r.sample_rate,
                               duration=r6(len(audios[e]) / r.sample_rate), words=_words(r.words, 1.0 / prosody[e].rate),
                               params=prosody[e].as_dict(), extra={"source": p["source"]})
        records.append(rec.to_json())
    return records, seconds


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

@dataclass
class SynthReport:
    out: str
    jobs: int
    skipped: int
    seconds_written: float
    wall_s: float
    cpu_s: float
    manifests: dict[str, int]


def _plan_header(cfg: AgentConfig, seed: int) -> dict[str, Any]:
    return {"version": PLAN_VERSION, "seed": seed, "preset": cfg.preset, "data": dataclasses.asdict(cfg.data),
            "llm": cfg.llm.card, "llm_max_new_tokens": cfg.data.qa_max_new_tokens, "voice": dataclasses.asdict(cfg.voice)}


def _cleanup_temp(out: Path) -> int:
    n = 0
    for p in out.rglob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def _done(out: Path, job: Job) -> bool:
    return (out / "items" / f"{job.id}.json").is_file()


def _run_jobs(cfg: AgentConfig, out: Path, jobs: list[Job], workers: int, desc: str,
              max_jobs: int | None, progress: bool) -> tuple[int, float]:
    from tqdm import tqdm

    todo = [j for j in jobs if not _done(out, j)]
    if max_jobs is not None:
        todo = todo[:max_jobs]
    seconds = 0.0
    if not todo:
        return 0, 0.0
    bar = tqdm(total=len(todo), desc=desc, unit="item", disable=not progress, dynamic_ncols=True)
    if workers <= 1:
        ctx = WorkerContext(cfg, out)
        for job in todo:
            seconds += run_job(ctx, job)[1]
            bar.update(1)
    else:
        import multiprocessing as mp

        # Longest jobs first keeps both workers busy to the end.
        order = {"dlg": 0, "qa": 1, "emo": 2, "utt": 3, "answer": 4}
        todo.sort(key=lambda j: (order[j.kind], j.id))
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(cfg, str(out))) as pool:
            for _, s in pool.imap_unordered(_run_in_worker, todo, chunksize=1):
                seconds += s
                bar.update(1)
    bar.close()
    return len(todo), seconds


def synthesize(cfg: AgentConfig, out: str | os.PathLike[str], seed: int, workers: int | None = None,
               max_jobs: int | None = None, progress: bool = True) -> SynthReport:
    """Make (or finish) the dataset in ``out``. ``max_jobs`` stops early (for tests of resuming)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = _plan_header(cfg, seed)
    plan_file = out / "plan.json"
    if plan_file.exists():
        old = json.loads(plan_file.read_text())
        if old.get("header") != json.loads(json.dumps(header)):
            raise PlanMismatchError(f"{out} holds a dataset made with another config or seed; use a new --out")
    _cleanup_temp(out)
    workers = cfg.data.workers if workers is None else workers
    answer_jobs = plan_answers(cfg, seed)
    atomic_write_text(plan_file, json.dumps({"header": header, "answers": [j.id for j in answer_jobs]}, sort_keys=True, indent=1))
    n1, _ = _run_jobs(cfg, out, answer_jobs, workers, "LLM answers", max_jobs, progress)
    remaining = None if max_jobs is None else max_jobs - n1
    total_jobs = len(answer_jobs)
    n2, seconds = 0, 0.0
    if remaining is None or remaining > 0:
        answers = {j.id: _read_records(out, j.id)[0] for j in answer_jobs}
        jobs = plan_items(cfg, seed, answers)
        total_jobs += len(jobs)
        atomic_write_text(plan_file, json.dumps({"header": header, "answers": [j.id for j in answer_jobs],
                                                 "items": [j.id for j in jobs]}, sort_keys=True, indent=1))
        n2, seconds = _run_jobs(cfg, out, jobs, workers, "audio items", remaining, progress)
        if all(_done(out, j) for j in jobs):
            counts = assemble(out, jobs)
            from training.data.datacard import write_data_card

            write_data_card(out, cfg, seed, counts)
        else:
            counts = {}
    else:
        counts = {}
    cpu = time.process_time() - c0
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += ru.ru_utime + ru.ru_stime
    except ImportError:  # pragma: no cover - not on Linux
        pass
    return SynthReport(out=str(out), jobs=total_jobs, skipped=total_jobs - n1 - n2, seconds_written=seconds,
                       wall_s=time.perf_counter() - t0, cpu_s=cpu, manifests=counts)


def _read_records(out: Path, job_id: str) -> list[dict[str, Any]]:
    return json.loads((out / "items" / f"{job_id}.json").read_text())["records"]


def assemble(out: Path, jobs: list[Job]) -> dict[str, int]:
    """Manifests from the item records (sorted by id, so identical plans give identical bytes)."""
    kinds = {"utt": "utterances", "qa": "qa", "dlg": "dialogues", "emo": "emotions"}
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds.values()}
    for job in jobs:
        rows[kinds[job.kind]] += _read_records(out, job.id)
    for kind, recs in rows.items():
        write_manifest(out, kind, recs)
    return {k: len(v) for k, v in rows.items()}


def records_of(out: str | os.PathLike[str], kind: str) -> list[Record]:
    from training.data.manifest import load_manifest

    return load_manifest(out, kind)
