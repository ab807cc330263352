"""The reference voice on our PyTorch VITS port (`agent.vits`).

Same front end and noise recipe as the ONNX `agent.piper.PiperVoice`, so the same seed gives the
same audio (to ~1e-5); use this one where gradients must flow through the voice (decoder
distillation, emotion plugins), and the ONNX one for bulk synthesis (several times faster on CPU).
"""

from __future__ import annotations

import numpy as np
import torch

from agent.piper import PiperFrontEnd, SentenceInput, Synthesis, _voice_files, draw_noise, sentence_seed
from agent.vits import VITS, VITSConfig
from configs.schema import VoiceConfig


def load_vits(cfg: VoiceConfig) -> tuple[VITS, dict]:
    """The voice's VITS module (eval mode, fp32) and its metadata (phoneme map, sample rate)."""
    from safetensors.torch import load_file

    folder, meta = _voice_files(cfg)
    model = VITS(VITSConfig(sample_rate=int(meta["audio"]["sample_rate"])))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    return model.eval(), meta


class TorchPiperVoice(PiperFrontEnd):
    def __init__(self, model: VITS, meta: dict, cfg: VoiceConfig) -> None:
        super().__init__(meta, cfg)
        self.model = model
        self.hop = model.cfg.hop

    @classmethod
    def load(cls, cfg: VoiceConfig) -> TorchPiperVoice:
        model, meta = load_vits(cfg)
        return cls(model, meta, cfg)

    def _render(self, sent: SentenceInput, rng: np.random.Generator, scales: tuple[float, float, float]):
        noise_scale, length_scale, noise_w = scales
        noise_dp, noise_prior = draw_noise(rng, len(sent.ids), self.max_frames(len(sent.ids), length_scale))
        with torch.no_grad():
            out = self.model.infer(
                torch.tensor([sent.ids]), noise_scale=noise_scale, length_scale=length_scale, noise_w=noise_w,
                noise_dp=torch.from_numpy(noise_dp), noise_prior=torch.from_numpy(noise_prior),
            )
        audio = out.audio[0].clamp(-1, 1).numpy().astype(np.float32)
        return sent, audio, out.durations[0].numpy(), out.z[0].numpy()

    def synthesize(
        self, text: str, *, seed: int, length_scale: float | None = None, noise_scale: float | None = None,
        noise_w: float | None = None, sentence_silence: float = 0.15,
    ) -> Synthesis:
        scales = self.scales(length_scale, noise_scale, noise_w)
        parts = [self._render(s, sentence_seed(seed, i), scales) for i, s in enumerate(self.sentence_inputs(text))]
        return self.assemble(parts, sentence_silence)
