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


def test_profile_dependent_sizes_come_from_the_profile(monkeypatch):
    from helpers import batching, caching, pruning, serving

    for name, values in [("quick", (1, 16, 5, 2, 12, 16, 60.0, (0.0, 0.3, 0.5, 0.7))),
                         ("full", (4, 256, 3, 8, 64, 48, 120.0, (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)))]:
        monkeypatch.setenv("WORKBOOK_PROFILE", name)
        sizes = caching.sizes()
        assert (sizes["kv_prompts"], sizes["kv_new_tokens"], sizes["kv_repeats"], sizes["prefix_requests"],
                batching.dynamic_requests(), serving.default_max_new_tokens(),
                serving.default_request_timeout_s(), pruning.sweep_sparsities()) == values
    assert pruning.sweep_sparsities("quick") == (0.0, 0.3, 0.5, 0.7)
