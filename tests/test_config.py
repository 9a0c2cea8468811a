import pytest

from helpers import config


def test_quick_is_the_default_profile(monkeypatch):
    monkeypatch.delenv("WORKBOOK_PROFILE", raising=False)
    assert config.profile().name == "quick"


def test_full_profile_is_larger_than_quick():
    quick, full = config.profile("quick"), config.profile("full")
    assert full.tickets_eval > quick.tickets_eval
    assert full.qa_eval > quick.qa_eval
    assert full.perplexity_texts > quick.perplexity_texts


def test_bogus_profile_names_the_fix(monkeypatch):
    monkeypatch.setenv("WORKBOOK_PROFILE", "bogus")
    with pytest.raises(config.ConfigError, match="WORKBOOK_PROFILE.*quick, full"):
        config.profile()


def test_device_is_cpu_without_gpu():
    import torch

    if not torch.cuda.is_available():
        assert config.device() in ("cpu", "mps")


def test_seed_everything_repeats_random_draws():
    import torch

    config.seed_everything(7)
    first = torch.rand(3)
    config.seed_everything(7)
    assert torch.equal(first, torch.rand(3))


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_CACHE", str(tmp_path / "cache"))
    assert config.cache_dir() == tmp_path / "cache"
    assert (tmp_path / "cache").is_dir()
