import pytest

from helpers import models


def test_unknown_env_model_names_the_variable(monkeypatch):
    monkeypatch.setenv("WORKBOOK_LLM", "no/such-model")
    with pytest.raises(models.ModelNotFoundError, match="WORKBOOK_LLM='no/such-model'"):
        models.load_llm()


def test_missing_bundled_package_says_make_setup(monkeypatch, tmp_path):
    monkeypatch.delenv("WORKBOOK_LLM", raising=False)
    monkeypatch.setattr(models, "bundled_gguf_path", lambda: None)
    monkeypatch.setattr(models, "converted_llm_dir", lambda: tmp_path / "none")
    assert models.resolve_llm() == models.LLM_HUB_ID
    with pytest.raises(models.ModelNotFoundError, match="make setup"):
        models.load_llm()


def test_missing_embedder_package_says_make_setup(monkeypatch):
    monkeypatch.delenv("WORKBOOK_EMBEDDER", raising=False)
    monkeypatch.setattr(models, "bundled_embedder_path", lambda: None)
    with pytest.raises(models.ModelNotFoundError, match="make setup"):
        models.load_embedder()


def test_env_var_pointing_at_a_folder_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBOOK_EMBEDDER", str(tmp_path))
    assert models.resolve_embedder() == str(tmp_path)


@pytest.mark.skipif(models.bundled_gguf_path() is None, reason="bundled model package not installed")
def test_bundled_llm_loads_as_fp32_llama():
    model, tokenizer = models.load_llm()
    assert model.config.model_type == "llama"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert not hasattr(model.config, "quantization_config")
    assert tokenizer.pad_token is not None
    assert (models.converted_llm_dir() / "model.safetensors").exists()


@pytest.mark.skipif(models.bundled_embedder_path() is None, reason="bundled embedder package not installed")
def test_bundled_embedder_gives_384_dimensions():
    embedder = models.load_embedder()
    vectors = embedder.encode(["reset my password", "forgot my password"], normalize_embeddings=True)
    assert vectors.shape == (2, 384)
    assert float(vectors[0] @ vectors[1]) > 0.6


def test_save_trained_replaces_the_folder_only_when_everything_is_written(tmp_path):
    import json

    from helpers.models import save_trained

    class Saves:
        def __init__(self, name):
            self.name = name

        def save_pretrained(self, folder, **_):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / self.name).write_text("x")

    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    (tmp_path / "model.partial").mkdir()  # left over from an interrupted save
    save_trained(Saves("weights.safetensors"), Saves("tokenizer.json"), target, {"info.json": {"epochs": 2}})
    assert sorted(p.name for p in target.iterdir()) == ["info.json", "tokenizer.json", "weights.safetensors"]
    assert json.loads((target / "info.json").read_text()) == {"epochs": 2}
    assert not (tmp_path / "model.partial").exists()
