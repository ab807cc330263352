"""The neutral unit-decoder recipe (`duplex-agent train tts`) end to end on a few renderings:
train from a prepared cache (no "data" stage), resume, export a decoder that loads."""

from __future__ import annotations

import pytest
import torch

from configs import load_config
from training.tts_data import TTSText, extract_units, render_corpus

TEXTS = [
    ("a", "The train to the coast leaves at half past nine tomorrow morning.", "train"),
    ("b", "Could you tell me where the nearest pharmacy is, please?", "train"),
    ("c", "I usually drink a cup of tea before I start working.", "train"),
    ("d", "The museum is closed on Mondays but open late on Fridays.", "val"),
]


def test_neutral_recipe_trains_from_a_prepared_cache_and_resumes(tmp_path, voice):
    from training import tts_neutral

    cache, runs = tmp_path / "cache", tmp_path / "runs"
    overrides = [f"tts_train.cache_dir={cache}", f"tts_train.out_dir={runs}", "tts_train.batch=2",
                 "tts_train.window_units=20", "tts_train.mel_batch=1", "tts_train.log_every=1",
                 "tts_train.steps=4", "tts_train.mel_steps=1"]
    cfg = load_config("default", overrides)
    render_corpus(voice, [TTSText(i, t, s) for i, t, s in TEXTS], cache, progress=False, noise_scale=0.0)
    tokenizer, identity = tts_neutral.training_units(cfg)
    extract_units(tokenizer, identity, cache, progress=False)

    stop = load_config("default", [*overrides[:-2], "tts_train.steps=2", "tts_train.mel_steps=0"])
    first = tts_neutral.main(stop, stages=("train",), progress=False)
    assert first["units"] == identity
    run_dir = runs / "neutral"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 2
    out = tts_neutral.main(cfg, stages=("train",), export_to=str(tmp_path / "dec.safetensors"), progress=False)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["step"] == 5  # resumed at 2, 4 latent steps + 1 mel step
    rows = [r for r in state["history"] if "latent_l1" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and "mel_l1" in rows[-1]
    assert (run_dir / "curves.csv").is_file() and (run_dir / "curves.png").is_file()
    # The export is the trained part of that checkpoint, in fp16.
    from safetensors.torch import load_file

    exported = load_file(out["weights"])
    assert exported and all(v.dtype == torch.float16 for v in exported.values() if v.is_floating_point())
    for k, v in exported.items():
        torch.testing.assert_close(v.float(), state["model"][k].float(), atol=2e-3, rtol=1e-2)

    # Fine-tuning starts from a weights file (`tts_train.init`): a fresh run at learning rate 0 holds
    # exactly the file's weights; a file made on other units is refused.
    init = [*overrides[:-2], f"tts_train.out_dir={tmp_path / 'runs2'}", f"tts_train.init={out['weights']}",
            "tts_train.steps=1", "tts_train.mel_steps=0", "tts_train.lr=0", "tts_train.lookahead=2"]
    tts_neutral.main(load_config("default", init), stages=("train",), progress=False)
    tuned = torch.load(tmp_path / "runs2" / "neutral" / "checkpoint.pt", weights_only=False)["model"]
    assert tuned.keys() >= exported.keys()
    for k, v in exported.items():
        torch.testing.assert_close(tuned[k], v.float())
    from agent.tts import read_tts_meta, save_tts

    model = tts_neutral.setup(load_config("default", init), identity, resume=False).model
    assert model.cfg.lookahead == read_tts_meta(out["weights"]).config.lookahead == 1  # the file's, not 2
    other = save_tts(model, tmp_path / "other.safetensors", units="units:someone-else:0")
    bad = load_config("default", [*overrides[:-2], f"tts_train.init={other}", f"tts_train.out_dir={tmp_path / 'runs3'}"])
    with pytest.raises(ValueError, match="someone-else"):
        tts_neutral.setup(bad, identity)
