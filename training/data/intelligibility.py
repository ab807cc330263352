"""`duplex-agent data judge DIR`: is the synthetic speech intelligible? (Whisper judge WER)

Groups, each a seeded sample of ``n`` utterances:
* ``agent_voice``: agent-voice utterances (held-out text if there are enough, else all);
* ``heldout_user_voices``: utterances by held-out user voices (test split: clean);
* ``train_user_voices``: training user voices as written (augmented: noise, codec, reverb);
* ``agent_<emotion>``: the agent voice's emotional renderings.
WER is corpus-level (total edits / total reference words) after `agent.text_metrics.normalize`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from configs.schema import AgentConfig
from training.data.manifest import EMOTIONS, load_manifest, manifest_path


def _sample(recs: list[Any], n: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    if len(recs) <= n:
        return recs
    return [recs[int(i)] for i in sorted(rng.choice(len(recs), n, replace=False))]


def judge_dataset(cfg: AgentConfig, root: str | os.PathLike[str], n: int = 100, seed: int = 0,
                  only: list[str] | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    from agent.judge import WhisperJudge
    from agent.text_metrics import wer

    utts = load_manifest(root, "utterances")
    agent = [u for u in utts if u.role == "agent"]
    agent_test = [u for u in agent if u.split == "test"]
    groups: dict[str, list[Any]] = {
        "agent_voice": _sample(agent_test if len(agent_test) >= n else agent, n, seed),
        "heldout_user_voices": _sample([u for u in utts if u.role == "user" and u.heldout_voice], n, seed),
        "train_user_voices": _sample([u for u in utts if u.role == "user" and not u.heldout_voice], n, seed),
    }
    if manifest_path(root, "emotions").is_file():
        emo = [e for e in load_manifest(root, "emotions") if e.voice == "piper:joe"]
        for e in EMOTIONS:
            groups[f"agent_{e}"] = _sample([r for r in emo if r.emotion == e], max(10, n // 4), seed)
    if only:
        groups = {k: v for k, v in groups.items() if k in only}
    judge = WhisperJudge(cfg.judge)
    out: dict[str, Any] = {"root": str(root), "judge": cfg.judge.card, "groups": {}}
    worst: dict[str, list[dict[str, Any]]] = {}
    for name, recs in groups.items():
        refs, hyps, rows = [], [], []
        for r in tqdm(recs, desc=name, leave=False):
            hyp = judge.transcribe(r.load_audio(), r.sample_rate, word_timestamps=False).text
            refs.append(r.text)
            hyps.append(hyp)
            rows.append({"id": r.id, "voice": r.voice, "ref": r.text, "hyp": hyp, "wer": round(wer(r.text, hyp), 3)})
        if not recs:
            continue
        out["groups"][name] = {"wer": round(wer(refs, hyps), 4), "n": len(recs),
                               "words": int(sum(len(x.split()) for x in refs)),
                               "voices": len({r.voice for r in recs})}
        worst[name] = sorted(rows, key=lambda x: -x["wer"])[:5]
    out["worst"] = worst
    return out
