"""Held-out figures of the unit generator and tokenizer (see the issue's "Done when").

- ``user_prediction_accuracy``: on held-out dialogues, the session runs with the real agent
  chunks forced and the real user chunks arriving one chunk late (so every user chunk is first
  predicted, then replaced); each predicted chunk's speech/silence is compared with the real one.
  A chunk is speech when most of its 25 Hz units are non-silence units of the codebook. The
  "persistence" baseline predicts the state of the newest real chunk the model had.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.sync_format import UnitVocab, frames_per_chunk
from agent.unit_generator import UnitGenerator
from agent.unit_session import GeneratorSession
from configs.schema import GeneratorConfig
from training.unit_sequences import UnitDialogue, duplex_sequence, token_table
from training.units_common import CondTable, UnitCorpus


def _speech(units: np.ndarray, silent: set[int]) -> bool:
    return float(np.mean([int(u) not in silent for u in units])) > 0.5


def _word_vectors(d: UnitDialogue, conds: CondTable) -> list[list[torch.Tensor]]:
    """Per agent turn (sorted by start), the slot vectors of each of its words."""
    table, _ = token_table(d)
    out = []
    row = 0
    for t in sorted(d.agent_turns, key=lambda t: t.start):
        vecs = conds.vectors(d, np.arange(row, row + len(t.token_ids)))
        words, pos = [], 0
        for n in t.word_tokens:
            words.append(vecs[pos : pos + n])
            pos += n
        out.append(words)
        row += len(t.token_ids)
    del table
    return out


@torch.no_grad()
def user_prediction_accuracy(model: UnitGenerator, corpus: UnitCorpus, indices: Sequence[int], conds: CondTable,
                             delay: int = 1) -> dict[str, float]:
    model.eval()
    vocab = UnitVocab(model.arch.num_units)
    n = frames_per_chunk(model.arch.chunk_ms)
    silent = set(corpus.silent_units)
    cfg = GeneratorConfig(temperature=0.0, predict_user=True, max_context=1 << 15, compact_to=1 << 14)
    model_ctx = UnitGenerator(model.arch, max_context=cfg.max_context)
    model_ctx.load_state_dict(model.state_dict())
    model_ctx.eval()
    hits = base_hits = total = speech_real = 0
    speech_hits = speech_total = 0
    for i in indices:
        d = corpus.dialogues[i]
        seq = duplex_sequence(d, vocab, model.arch.chunk_ms, model.arch.text_lookahead)
        user = np.concatenate([d.user, np.full((-len(d.user)) % n, d.user[-1])])
        turns = sorted(d.agent_turns, key=lambda t: t.start)
        words = _word_vectors(d, conds)
        ins = {}
        for t, w in zip(turns, words, strict=True):
            first = t.word_onsets[0] if t.word_onsets else t.start
            ins.setdefault(first // n, []).append(w)
        session = GeneratorSession(model_ctx, cfg, None, silent_units=silent)
        for k in range(len(seq.chunk_pos)):
            for w in ins.get(k, []):
                session.start_reply()
                for vec in w:
                    session.push_word(vec)
                session.end_text()
            j = k - 1 - delay
            if j >= 0:
                session.push_user_chunk(j, user[j * n : (j + 1) * n])
            a, b = seq.chunk_pos[k]
            forced = [int(t) for t in seq.tokens[a + 1 : b] if vocab.is_unit(int(t)) or int(t) == vocab.word]
            out = session.step(force_agent=forced)
            if out.user_units is None or out.user_source != "predicted":
                continue
            real = user[(k - 1) * n : k * n]
            truth = _speech(real, silent)
            pred = _speech(out.user_units, silent)
            known = k - 1 - delay  # newest real chunk the model had
            base = _speech(user[known * n : (known + 1) * n], silent) if known >= 0 else False
            hits += int(pred == truth)
            base_hits += int(base == truth)
            speech_real += int(truth)
            if truth:
                speech_total += 1
                speech_hits += int(pred)
            total += 1
    return {
        "user_speech_silence_acc": hits / max(total, 1),
        "user_speech_silence_acc_persistence": base_hits / max(total, 1),
        "user_speech_recall": speech_hits / max(speech_total, 1),
        "user_speech_share": speech_real / max(total, 1),
        "user_chunks_scored": float(total),
    }


# -- tokenizer: phone purity / PNMI on held-out Piper speech ---------------------------------------
FALLBACK_TEXTS = (
    "The train to the airport leaves every twenty minutes from platform four.",
    "I would rather stay home tonight and read a good book by the fire.",
    "Could you tell me how long it takes to bake fresh bread?",
    "My sister bought a bright yellow bicycle at the market on Sunday.",
    "Please remember to water the plants before you go on holiday.",
    "The museum closes early on Mondays, so we should visit in the morning.",
    "Thank you so much, that was exactly what I needed to hear.",
    "Birds sing loudly just before the sun comes up over the hills.",
)
"""Hand-written sentences (not in the corpus) used when no held-out corpus text is given."""

_MODIFIERS = set("ˈˌːˑ ")
_PAUSES = set(",.!?;:—-…\"'()")


def phone_frames(synth: object, id_to_symbol: dict[int, str], rate: int, total_frames: int) -> list[str]:
    """Majority phone label of every 40 ms frame of a Piper ``Synthesis`` (durations -> samples).

    Pads, stress and length marks and spaces belong to the phone before them; BOS/EOS,
    punctuation pauses and the silence between sentences are ``sil``.
    """
    labels = np.full(int(total_frames * UNIT_S * rate) + 1, "sil", dtype=object)
    for sent in synth.sentences:  # type: ignore[attr-defined]
        pos = int(sent.offset)
        prev = "sil"
        for pid, dur in zip(sent.ids, sent.durations, strict=True):
            sym = id_to_symbol.get(int(pid), "sil")
            n = int(dur) * int(synth.hop)  # type: ignore[attr-defined]
            if sym in ("^", "$") or sym in _PAUSES:
                lab = "sil"
            elif sym == "_" or sym in _MODIFIERS:
                lab = prev
            else:
                lab = sym
            labels[pos : pos + n] = lab
            prev = lab
            pos += n
    step = UNIT_S * rate
    out = []
    for i in range(total_frames):
        seg = labels[int(i * step) : int((i + 1) * step)]
        vals, counts = np.unique(seg.astype(str), return_counts=True) if len(seg) else (np.array(["sil"]), [1])
        out.append(str(vals[int(np.argmax(counts))]))
    return out


def purity_figures(phones: Sequence[str], units: Sequence[int]) -> dict[str, float]:
    """HuBERT-paper figures: phone purity, cluster purity and phone-normalised mutual information."""
    ph_names = sorted(set(phones))
    ph_idx = {p: i for i, p in enumerate(ph_names)}
    un = sorted(set(int(u) for u in units))
    un_idx = {u: i for i, u in enumerate(un)}
    joint = np.zeros((len(ph_names), len(un)))
    for p, u in zip(phones, units, strict=True):
        joint[ph_idx[p], un_idx[int(u)]] += 1
    n = joint.sum()
    pj = joint / n
    pp, pu = pj.sum(1), pj.sum(0)
    nz = pj > 0
    mi = float((pj[nz] * np.log(pj[nz] / (pp[:, None] * pu[None, :])[nz])).sum())
    hp = float(-(pp[pp > 0] * np.log(pp[pp > 0])).sum())
    return {
        "phone_purity": float(joint.max(0).sum() / n),
        "cluster_purity": float(joint.max(1).sum() / n),
        "pnmi": mi / hp if hp > 0 else 0.0,
        "phones": float(len(ph_names)),
        "units_used": float(len(un)),
        "frames": float(n),
    }


UNIT_S = 0.04


def purity_report(cfg: object, limit: int = 40, texts: Sequence[str] | None = None, data: str | None = None) -> dict:
    """Units of held-out Piper speech vs its phone alignment (from the voice's durations)."""
    from agent.piper import PiperVoice
    from agent.units import SAMPLE_RATE, load_unit_tokenizer
    from speech_io.wav import resample

    tok = load_unit_tokenizer(cfg.units)  # type: ignore[attr-defined]
    voice = PiperVoice.load(cfg.voice)  # type: ignore[attr-defined]
    inv = {v: k for k, v in voice.id_map.items()}
    source = "hand-written fallback sentences"
    if texts is None:
        texts = list(FALLBACK_TEXTS)
        root = data or getattr(getattr(cfg, "units_train", None), "data_dir", None)
        if root and Path(root, "manifests", "utterances.jsonl").is_file():
            from training.data.manifest import load_manifest

            held = [r.text for r in load_manifest(root, "utterances", "test") if r.role == "agent" and r.text]
            if held:
                texts, source = held, f"{root} test-split agent texts"
    texts = list(texts)[:limit]
    phones: list[str] = []
    units: list[int] = []
    for i, text in enumerate(texts):
        synth = voice.render(text, seed=10_000 + i)
        audio16 = resample(synth.audio, synth.sample_rate, SAMPLE_RATE)
        u = tok.extract(audio16, SAMPLE_RATE)
        phones += phone_frames(synth, inv, synth.sample_rate, len(u))
        units += [int(x) for x in u]
    figs = purity_figures(phones, units)
    speech = [p != "sil" for p in phones]
    sp_figs = purity_figures([p for p, s in zip(phones, speech, strict=True) if s],
                             [u for u, s in zip(units, speech, strict=True) if s])
    return {"texts": len(texts), "text_source": source, "codebook": cfg.units.card,  # type: ignore[attr-defined]
            **figs, "speech_only": sp_figs}


# -- generator: replies (units vs the Piper rendering) and predicted user chunks -------------------
def _edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def _content(units: Sequence[int], silent: set[int]) -> list[int]:
    """De-duplicated units with silence removed (what is said, not how long)."""
    from agent.sync_format import dedup

    return [u for u in dedup([int(x) for x in units])[0] if u not in silent]


@torch.no_grad()
def generate_reply(model: UnitGenerator, d: UnitDialogue, conds: CondTable, silent: set[int],
                   temperature: float = 0.0, seed: int = 0, max_chunks: int = 200) -> dict[str, object]:
    """Free-run the session on a QA dialogue: the real user question, then the agent's reply text
    read as at run time; returns the generated 25 Hz agent units of the reply."""
    n = frames_per_chunk(model.arch.chunk_ms)
    cfg = GeneratorConfig(temperature=temperature, predict_user=True, seed=seed, max_context=1 << 14, compact_to=1 << 13)
    session = GeneratorSession(model, cfg, None, silent_units=silent)
    user = np.concatenate([d.user, np.full((-len(d.user)) % n, d.user[-1])])
    turn = sorted(d.agent_turns, key=lambda t: t.start)[0]
    words = _word_vectors(d, conds)[0]
    start_chunk = (turn.word_onsets[0] if turn.word_onsets else turn.start) // n
    agent: list[int] = []
    first_speech = None
    quiet = 0
    for k in range(max_chunks):
        if k == start_chunk:
            session.start_reply()
            for vec in words:
                session.push_word(vec)
            session.end_text()
        j = k - 2
        if 0 <= j < len(user) // n:
            session.push_user_chunk(j, user[j * n : (j + 1) * n])
        out = session.step()
        if k >= start_chunk:
            agent += out.agent_units.tolist()
            if out.speaking and first_speech is None:
                first_speech = k - start_chunk
            r = session.reply
            done = r is not None and r.eot_sent
            quiet = quiet + 1 if (done and not out.speaking) else 0
            if quiet >= 4:
                break
    return {"units": agent, "first_speech_chunks": first_speech}


def _model_and_conds(cfg: object) -> tuple[UnitGenerator, CondTable, dict]:
    from agent.llm import load_llm
    from agent.unit_generator import load_generator

    loaded = load_generator(cfg.generator)  # type: ignore[attr-defined]
    llm = load_llm(cfg.llm)  # type: ignore[attr-defined]
    conds = CondTable.from_llm(llm, loaded.model.arch.use_hidden, loaded.model.arch.phoneme_symbols)
    return loaded.model.eval(), conds, loaded.extra


def replies_report(cfg: object, data: str | None, split: str, limit: int) -> dict:
    """Held-out LLM answers -> generated units, vs the units of the Piper rendering of the same text.

    Figures: unit edit distance (de-duplicated, silence removed) normalised by the reference length,
    and the same figure between two Piper renderings of the text with different seeds (how much the
    reference itself varies), plus the speech-length ratio and the start delay in chunks.
    """
    cache = data or cfg.units_train.cache_dir  # type: ignore[attr-defined]
    corpus = UnitCorpus.load(cache, split)
    model, conds, extra = _model_and_conds(cfg)
    corpus = conds.add_phoneme_slots(corpus)  # the reply words as this generator reads them
    silent = set(extra.get("silent_units", corpus.silent_units))
    idx = corpus.select(["qa"])[:limit]
    if not idx:
        raise FileNotFoundError(f"no qa dialogues in the {split} split of {cache}")
    errs, lens, starts = [], [], []
    for i in idx:
        d = corpus.dialogues[i]
        turn = d.agent_turns[0]
        ref = _content(d.agent[turn.start : turn.end], silent)
        out = generate_reply(model, d, conds, silent)
        hyp = _content(out["units"], silent)  # type: ignore[arg-type]
        errs.append(_edit_distance(hyp, ref) / max(1, len(ref)))
        lens.append(len(hyp) / max(1, len(ref)))
        if out["first_speech_chunks"] is not None:
            starts.append(out["first_speech_chunks"])
    result = {
        "items": len(idx),
        "unit_edit_rate": float(np.mean(errs)),
        "unit_edit_rate_median": float(np.median(errs)),
        "length_ratio": float(np.mean(lens)),
        "spoke": len(starts) / len(idx),
        "first_speech_chunks_median": float(np.median(starts)) if starts else None,
        "split": split,
    }
    result.update(_reference_variation(cfg, corpus, idx, silent))
    return result


def _reference_variation(cfg: object, corpus: UnitCorpus, idx: Sequence[int], silent: set[int]) -> dict:
    """Unit edit rate between the corpus rendering and a second Piper rendering (another seed)."""
    from agent.piper import PiperVoice
    from agent.units import SAMPLE_RATE, load_unit_tokenizer
    from speech_io.wav import resample

    try:
        tok = load_unit_tokenizer(cfg.units)  # type: ignore[attr-defined]
        voice = PiperVoice.load(cfg.voice)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - the reference figure is optional
        return {"reference_edit_rate": None, "reference_note": f"not computed: {exc}"}
    from agent.llm import load_llm

    llm = load_llm(cfg.llm)  # type: ignore[attr-defined]
    errs = []
    for i in list(idx)[:20]:
        d = corpus.dialogues[i]
        turn = d.agent_turns[0]
        text = llm.decode_text([t for t in turn.token_ids.tolist() if t >= 0])  # without phoneme slots
        synth = voice.render(text, seed=777 + i)
        units = tok.extract(resample(synth.audio, synth.sample_rate, SAMPLE_RATE), SAMPLE_RATE)
        ref = _content(d.agent[turn.start : turn.end], silent)
        errs.append(_edit_distance(_content(units, silent), ref) / max(1, len(ref)))
    return {"reference_edit_rate": float(np.mean(errs)), "reference_items": len(errs)}


def user_report(cfg: object, data: str | None, split: str, limit: int) -> dict:
    cache = data or cfg.units_train.cache_dir  # type: ignore[attr-defined]
    corpus = UnitCorpus.load(cache, split)
    model, conds, extra = _model_and_conds(cfg)
    corpus = conds.add_phoneme_slots(corpus)  # the reply words as this generator reads them
    idx = corpus.select(["overlap"])[:limit]
    if not idx:
        raise FileNotFoundError(f"no overlap dialogues in the {split} split of {cache}")
    return {"dialogues": len(idx), "split": split, **user_prediction_accuracy(model, corpus, idx, conds)}


# -- generator replies and unit resynthesis, heard through the unit decoder + Whisper judge --------
def codebook_bridge(src: str | Path, dst: str | Path) -> np.ndarray:
    """(num_src,) id of the ``dst`` centroid nearest to each ``src`` centroid, in raw feature space.

    Only meaningful between codebooks fitted on the same features (backend, model and layer): a
    decoder trained on an earlier codebook can then speak units of the current one. The mapping
    loses what the two k-means partitions disagree on; ``speech_report`` measures it (the
    resynthesis WER of real units goes through the same bridge).
    """
    from agent.units import KMeansCodebook

    a, b = KMeansCodebook.load(src), KMeansCodebook.load(dst)
    if a.dim != b.dim:
        raise ValueError(f"codebooks {src} ({a.dim}-d) and {dst} ({b.dim}-d) quantise different features")
    raw = a.centroids * a.std + a.mean  # (Na, D) back to feature space
    dist = torch.cdist(b.normalise(raw), b.centroids)
    return dist.argmin(1).numpy().astype(np.int64)


def load_decoder(cfg: object, decoder: str | None) -> tuple[Any, str]:
    """The neutral unit decoder (a card name or .safetensors file; default ``cfg.tts.card``)."""
    from dataclasses import replace

    from agent.tts_emotion import load_emotion_tts

    tts_cfg = replace(cfg.tts, card=decoder or cfg.tts.card, plugins={})  # type: ignore[attr-defined]
    model, identity = load_emotion_tts(replace(cfg, tts=tts_cfg), emotions=[])  # type: ignore[type-var]
    return model.tts, identity


@torch.no_grad()
def speech_report(cfg: object, data: str | None, split: str, limit: int, decoder: str | None = None,
                  decoder_codebook: str | None = None, temperature: float | None = None, progress: bool = True,
                  kinds: Sequence[str] = ("qa",)) -> dict:
    """Held-out LLM answers (QA dialogues; ``kinds`` may add or choose ``utterance``: agent
    sentences without a question) spoken two ways and transcribed by the Whisper judge:

    - ``reply_wer``: the generator reads the answer text as at run time (user question first),
      its units go through the unit decoder; WER against the LLM's text;
    - ``resynth_wer``: the units of the corpus's Piper rendering of the same answer, through the
      same decoder (the decoder's own ceiling for these texts).

    ``decoder_codebook``: the codebook the decoder was trained on, when it is not the current one
    (units are mapped with ``codebook_bridge``; the result says so).
    """
    from tqdm import tqdm

    from agent.judge import WhisperJudge
    from agent.llm import load_llm
    from agent.text_metrics import wer
    from agent.units import codebook_path

    cache = data or cfg.units_train.cache_dir  # type: ignore[attr-defined]
    corpus = UnitCorpus.load(cache, split)
    idx = corpus.select(list(kinds))[:limit]
    if not idx:
        raise FileNotFoundError(f"no {'/'.join(kinds)} dialogues in the {split} split of {cache}")
    model, conds, extra = _model_and_conds(cfg)
    corpus = conds.add_phoneme_slots(corpus)  # the reply words as this generator reads them
    silent = set(extra.get("silent_units", corpus.silent_units))
    tts, identity = load_decoder(cfg, decoder)
    current = codebook_path(cfg.units.card)  # type: ignore[attr-defined]
    bridge = None
    if decoder_codebook:
        bridge = codebook_bridge(current, decoder_codebook)
    elif identity and identity.split(":")[-1] not in _sha(current):
        raise ValueError(f"the decoder was trained on units {identity}, not on {current}; "
                         "pass --decoder-codebook with the codebook it was trained on")
    llm = load_llm(cfg.llm)  # type: ignore[attr-defined]
    judge = WhisperJudge(cfg.judge)  # type: ignore[attr-defined]

    def speak(units: Sequence[int]) -> np.ndarray:
        u = np.asarray(units, dtype=np.int64)
        if bridge is not None:
            u = bridge[u]
        out = tts.offline(torch.from_numpy(u)[None])
        return out.audio[0, : int(out.lengths[0])].numpy()

    refs, gen_hyps, res_hyps, examples = [], [], [], []
    started = []
    for i in tqdm(idx, desc="replies", disable=not progress):
        d = corpus.dialogues[i]
        turn = d.agent_turns[0]
        text = llm.decode_text([t for t in turn.token_ids.tolist() if t >= 0])  # without phoneme slots
        real = d.agent[max(0, turn.start - 2) : turn.end + 2]
        # A reply that has not ended by twice its real length is cut there (a looping model would
        # otherwise run to max_chunks and only cost judge time).
        n = frames_per_chunk(model.arch.chunk_ms)
        first = (turn.word_onsets[0] if turn.word_onsets else turn.start) // n
        cap = first + 2 * -(-(turn.end - turn.start) // n) + 8
        temp = cfg.generator.temperature if temperature is None else temperature  # type: ignore[attr-defined]
        gen = generate_reply(model, d, conds, silent, temperature=temp, seed=i, max_chunks=cap)
        gen_units = np.asarray(gen["units"], dtype=np.int64)
        refs.append(text)
        gen_hyps.append(judge.transcribe(speak(gen_units), 22050).text if len(gen_units) else "")
        res_hyps.append(judge.transcribe(speak(real), 22050).text)
        started.append(gen["first_speech_chunks"] is not None)
        if len(examples) < 8:
            examples.append({"text": text, "generated_heard": gen_hyps[-1], "resynth_heard": res_hyps[-1]})
    return {
        "items": len(idx),
        "split": split,
        "kinds": list(kinds),
        "reply_wer": float(wer(refs, gen_hyps)),
        "resynth_wer": float(wer(refs, res_hyps)),
        "spoke": float(np.mean(started)),
        "temperature": cfg.generator.temperature if temperature is None else temperature,  # type: ignore[attr-defined]
        "decoder": decoder or cfg.tts.card,  # type: ignore[attr-defined]
        "decoder_units": identity,
        "codebook_bridge": str(decoder_codebook) if bridge is not None else None,
        "examples": examples,
    }


def _sha(path: Path) -> str:
    from agent.assets import sha256_file

    return sha256_file(path)
