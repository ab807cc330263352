"""Synthetic spoken-dialogue data: text sources, voices, timelines, labels, manifests, importers.

Readers only need ``load_manifest(root, kind, split)`` (kinds: utterances, qa, dialogues,
emotions) and the record types; everything else is the generator (`duplex-agent data synth`).
"""

from training.data.labels import CONTINUE, INTERRUPT, LABEL_NAMES, REJECT
from training.data.manifest import (
    EMOTIONS,
    KINDS,
    SPLITS,
    Dialogue,
    EmotionUtterance,
    ManifestError,
    QAItem,
    Segment,
    Utterance,
    WordTime,
    load_audio_file,
    load_manifest,
    write_manifest,
)

__all__ = [
    "CONTINUE", "EMOTIONS", "INTERRUPT", "KINDS", "LABEL_NAMES", "REJECT", "SPLITS", "Dialogue", "EmotionUtterance",
    "ManifestError", "QAItem", "Segment", "Utterance", "WordTime", "load_audio_file", "load_manifest", "write_manifest",
]
