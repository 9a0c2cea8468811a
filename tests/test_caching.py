"""Unit tests of helpers.caching with a tiny deterministic bag-of-words embedder."""

import zlib

import numpy as np
import pytest

from helpers import caching, rag
from helpers.caching import LRUCache, SemanticCache


class BagOfWordsEmbedder:
    """Each lower-cased word adds 1 to a hashed dimension: texts sharing words are similar."""

    dimension = 64

    def __init__(self):
        self.calls = 0

    def encode(self, texts, **_options):
        self.calls += 1
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, zlib.crc32(word.encode()) % self.dimension] += 1.0
        return vectors


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def cache():
    return SemanticCache(embedder=BagOfWordsEmbedder(), threshold=0.8, max_entries=10)


# --- LRU ---------------------------------------------------------------------------------

def test_lru_hit_after_normalisation_and_miss_otherwise():
    lru = LRUCache(max_entries=4)
    lru.put("How do I reset my password?", "Use the link.")
    assert lru.get("  how do I   RESET my password?") == "Use the link."
    assert lru.get("How do I reset my password") is None  # punctuation matters
    assert lru.stats() == {"hits": 1, "misses": 1, "hit_rate": 0.5, "entries": 1, "evictions": 0}


def test_lru_evicts_least_recently_used():
    lru = LRUCache(max_entries=2)
    lru.put("a", "1")
    lru.put("b", "2")
    assert lru.get("a") == "1"  # "b" is now the least recently used
    lru.put("c", "3")
    assert lru.get("b") is None
    assert lru.get("a") == "1" and lru.get("c") == "3"
    assert lru.stats()["evictions"] == 1 and len(lru) == 2


def test_lru_namespaces_are_isolated():
    lru = LRUCache()
    lru.put("refund policy", "30 days", namespace="tenant-a")
    assert lru.get("refund policy", namespace="tenant-b") is None
    assert lru.get("refund policy", namespace="tenant-a") == "30 days"


@pytest.mark.parametrize("bad", ["", "   \n", None])
def test_lru_rejects_empty_prompt(bad):
    with pytest.raises(ValueError, match="prompt"):
        LRUCache().get(bad)


def test_lru_rejects_bad_size():
    with pytest.raises(ValueError, match="max_entries"):
        LRUCache(max_entries=0)


# --- semantic cache ----------------------------------------------------------------------

def test_semantic_hit_on_similar_prompt_and_miss_on_different(cache):
    cache.put("how do i reset my password", "Use the reset link.")
    assert cache.get("how do i reset my password please") == "Use the reset link."
    assert cache.get("what does the business plan cost") is None
    found = cache.lookup("how do i reset my password please")
    assert found.hit and found.matched_prompt == "how do i reset my password"
    assert 0.8 <= found.similarity <= 1.0 + 1e-6
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 1)
    assert stats["hit_rate"] == pytest.approx(2 / 3)


def test_semantic_miss_on_empty_cache_counts(cache):
    assert cache.get("anything at all") is None
    assert cache.stats()["misses"] == 1 and cache.stats()["hit_rate"] == 0.0


def test_threshold_decides_hit():
    strict = SemanticCache(embedder=BagOfWordsEmbedder(), threshold=1.0)
    strict.put("reset my password", "link")
    assert strict.get("reset my password now") is None
    assert strict.get("RESET my password") == "link"  # same words, similarity 1


def test_namespaces_never_share_answers(cache):
    cache.put("what is the refund window", "30 days", namespace="tenant-a")
    assert cache.get("what is the refund window", namespace="tenant-b") is None
    assert cache.get("what is the refund window") is None  # default namespace is separate too
    assert cache.get("what is the refund window", namespace="tenant-a") == "30 days"
    assert cache.namespaces() == ["tenant-a"]


def test_same_prompt_replaces_answer(cache):
    cache.put("refund window", "14 days")
    cache.put("Refund   window", "30 days")
    assert len(cache) == 1
    assert cache.get("refund window") == "30 days"


def test_lru_eviction_drops_least_recently_used():
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), threshold=0.99, max_entries=2)
    cache.put("alpha one", "A")
    cache.put("bravo two", "B")
    assert cache.get("alpha one") == "A"  # bravo is now least recently used
    cache.put("charlie three", "C")
    assert len(cache) == 2 and cache.stats()["evictions"] == 1
    assert cache.get("bravo two") is None
    assert cache.get("alpha one") == "A" and cache.get("charlie three") == "C"


def test_eviction_across_namespaces_keeps_indexes_consistent():
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), threshold=0.99, max_entries=1)
    cache.put("alpha one", "A", namespace="x")
    cache.put("bravo two", "B", namespace="y")
    assert cache.get("alpha one", namespace="x") is None
    assert cache.get("bravo two", namespace="y") == "B"
    assert cache._indexes["x"].ntotal == 0 and cache._indexes["y"].ntotal == 1


def test_ttl_expires_entries_with_injected_clock():
    clock = FakeClock()
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), threshold=0.8, ttl_s=60, clock=clock)
    cache.put("reset my password", "link")
    clock.now += 59
    assert cache.get("reset my password") == "link"
    clock.now += 2
    assert cache.get("reset my password") is None
    assert len(cache) == 0 and cache.stats()["expirations"] == 1


def test_ttl_none_never_expires():
    clock = FakeClock()
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), ttl_s=None, clock=clock)
    cache.put("reset my password", "link")
    clock.now += 10 ** 9
    assert cache.get("reset my password") == "link"


@pytest.mark.parametrize("threshold", [0, -0.1, 1.01, 2, True, "0.9"])
def test_threshold_outside_unit_interval_is_rejected(threshold):
    with pytest.raises(ValueError, match=r"threshold must be .*\(0, 1\]"):
        SemanticCache(embedder=BagOfWordsEmbedder(), threshold=threshold)


@pytest.mark.parametrize("max_entries", [0, -3, 1.5])
def test_bad_max_entries_is_rejected(max_entries):
    with pytest.raises(ValueError, match="max_entries"):
        SemanticCache(embedder=BagOfWordsEmbedder(), max_entries=max_entries)


def test_bad_ttl_is_rejected():
    with pytest.raises(ValueError, match="ttl_s"):
        SemanticCache(embedder=BagOfWordsEmbedder(), ttl_s=0)


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_semantic_rejects_empty_prompt(cache, bad):
    with pytest.raises(ValueError, match="prompt"):
        cache.get(bad)
    with pytest.raises(ValueError, match="prompt"):
        cache.put(bad, "answer")
    assert cache.stats()["misses"] == 0  # a rejected lookup is not a miss


def test_semantic_rejects_bad_namespace_and_response(cache):
    with pytest.raises(ValueError, match="namespace"):
        cache.get("hello there", namespace="")
    with pytest.raises(ValueError, match="response"):
        cache.put("hello there", None)


def test_embedder_is_not_called_for_rejected_input(cache):
    calls = cache.embedder.calls
    with pytest.raises(ValueError):
        cache.put("", "x")
    assert cache.embedder.calls == calls


# --- threshold from labelled pairs -------------------------------------------------------

def test_threshold_sweep_by_hand():
    similarities = [0.95, 0.85, 0.70, 0.90, 0.60]
    same = [True, True, True, False, False]
    rows = caching.threshold_sweep(similarities, same, thresholds=[0.8, 0.92])
    assert rows[0] == {"threshold": 0.8, "precision": 2 / 3, "recall": 2 / 3, "false_hit_rate": 0.5}
    assert rows[1] == {"threshold": 0.92, "precision": 1.0, "recall": 1 / 3, "false_hit_rate": 0.0}
    assert caching.choose_threshold(rows, max_false_hit_rate=0.05)["threshold"] == 0.92
    assert caching.choose_threshold(rows, max_false_hit_rate=0.5)["threshold"] == 0.8


def test_choose_threshold_fails_clearly_when_nothing_qualifies():
    rows = caching.threshold_sweep([0.9, 0.95], [True, False], thresholds=[0.5, 0.9])
    with pytest.raises(ValueError, match="false-hit"):
        caching.choose_threshold(rows)


def test_threshold_sweep_needs_both_kinds():
    with pytest.raises(ValueError, match="both"):
        caching.threshold_sweep([0.9, 0.8], [True, True])


def test_pair_similarities_match_cosine():
    embedder = BagOfWordsEmbedder()
    sims = caching.pair_similarities(embedder, ["a b", "a b"], ["a b", "c d"])
    assert sims[0] == pytest.approx(1.0)
    vectors = embedder.encode(["a b", "c d"])
    expected = vectors[0] @ vectors[1] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1])
    assert sims[1] == pytest.approx(expected)


# --- KV cache arithmetic -----------------------------------------------------------------

def test_kv_cache_bytes_opt13b_matches_pagedattention_figure():
    # 40 layers, 40 heads of 128 dims (hidden 5120), fp16: 800 KB per token.
    assert caching.kv_cache_bytes(layers=40, kv_heads=40, head_dim=128, bytes_per_value=2) == 819_200


def test_kv_cache_bytes_per_token_from_config_uses_kv_heads():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=64, vocab_size=128)
    assert caching.kv_cache_bytes_per_token(config, bytes_per_value=4) == 2 * 30 * 3 * 64 * 4


def test_kv_cache_bytes_rejects_zero():
    with pytest.raises(ValueError):
        caching.kv_cache_bytes(layers=0, kv_heads=1, head_dim=1)


# --- prefix cache on a tiny random model -------------------------------------------------

def test_prefix_cache_gives_same_tokens_as_full_prompt():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128)
    model = LlamaForCausalLM(config).eval()

    class Tokenizer:
        pad_token_id = 0

    prefix = torch.randint(1, 128, (1, 20))
    full = torch.cat([prefix, torch.randint(1, 128, (1, 6))], dim=1)
    cache = caching.build_prefix_cache(model, prefix)
    length_before = cache.get_seq_length()
    plain = caching.generate_with_prefix(model, Tokenizer, full, 5)
    cached = caching.generate_with_prefix(model, Tokenizer, full, 5, prefix_cache=cache)
    assert torch.equal(plain, cached)
    assert cache.get_seq_length() == length_before == 20  # the shared prefix was not modified
    assert caching.cache_bytes(cache) == caching.kv_cache_bytes_per_token(config, bytes_per_value=4) * 20


def test_default_threshold_is_the_one_the_data_chooses():
    from helpers import config, data, models

    if not (config.DATA_DIR / "cache_pairs.jsonl").exists() or models.bundled_embedder_path() is None:
        pytest.skip("needs data/cache_pairs.jsonl and the bundled embedder")
    pairs = data.load_cache_pairs()
    similarities = caching.pair_similarities(models.load_embedder(device="cpu"), [p["a"] for p in pairs],
                                             [p["b"] for p in pairs])
    sweep = caching.threshold_sweep(similarities, [p["same"] for p in pairs])
    assert caching.choose_threshold(sweep, max_false_hit_rate=0.05)["threshold"] == caching.DEFAULT_THRESHOLD


def test_rag_style_prompts_pair_an_excerpt_with_its_question():
    from helpers import config

    if not (config.DATA_DIR / "qa.jsonl").exists():
        pytest.skip("needs data/qa.jsonl")
    prompts = rag.rag_style_prompts(3, max_chars=600)
    assert len(prompts) == 3 and len(set(prompts)) == 3
    assert all("\n\nQuestion: " in prompt and len(prompt) < 600 + 300 for prompt in prompts)
    with pytest.raises(ValueError, match="fewer"):
        rag.rag_style_prompts(10_000)
