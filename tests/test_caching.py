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
    return SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, threshold=0.8, max_entries=10)


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
    strict = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, threshold=1.0)
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
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, threshold=0.99, max_entries=2)
    cache.put("alpha one", "A")
    cache.put("bravo two", "B")
    assert cache.get("alpha one") == "A"  # bravo is now least recently used
    cache.put("charlie three", "C")
    assert len(cache) == 2 and cache.stats()["evictions"] == 1
    assert cache.get("bravo two") is None
    assert cache.get("alpha one") == "A" and cache.get("charlie three") == "C"


def test_eviction_within_a_namespace_keeps_indexes_consistent():
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, threshold=0.99, max_entries=1)
    cache.put("alpha one", "A", namespace="x")
    cache.put("bravo two", "B", namespace="y")
    cache.put("charlie three", "C", namespace="x")
    assert cache.get("alpha one", namespace="x") is None
    assert cache.get("bravo two", namespace="y") == "B" and cache.get("charlie three", namespace="x") == "C"
    assert cache._indexes["x"].ntotal == 1 and cache._indexes["y"].ntotal == 1


def test_ttl_expires_entries_with_injected_clock():
    clock = FakeClock()
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, threshold=0.8, ttl_s=60, clock=clock)
    cache.put("reset my password", "link")
    clock.now += 59
    assert cache.get("reset my password") == "link"
    clock.now += 2
    assert cache.get("reset my password") is None
    assert len(cache) == 0 and cache.stats()["expirations"] == 1


def test_ttl_none_never_expires():
    clock = FakeClock()
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, ttl_s=None, clock=clock)
    cache.put("reset my password", "link")
    clock.now += 10 ** 9
    assert cache.get("reset my password") == "link"


@pytest.mark.parametrize("threshold", [0, -0.1, 1.01, 2, True, "0.9"])
def test_threshold_outside_unit_interval_is_rejected(threshold):
    with pytest.raises(ValueError, match=r"threshold must be .*\(0, 1\]"):
        SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, threshold=threshold)


@pytest.mark.parametrize("max_entries", [0, -3, 1.5])
def test_bad_max_entries_is_rejected(max_entries):
    with pytest.raises(ValueError, match="max_entries"):
        SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, max_entries=max_entries)


def test_bad_ttl_is_rejected():
    with pytest.raises(ValueError, match="ttl_s"):
        SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, ttl_s=0)


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
    pairs = data.load_cache_pairs("calibration") + data.load_cache_pairs("test")
    similarities = caching.pair_similarities(models.load_embedder(device="cpu"), [p["a"] for p in pairs],
                                             [p["b"] for p in pairs])
    sweep = caching.threshold_sweep(similarities, [p["same"] for p in pairs])
    assert caching.choose_threshold(sweep, max_false_hit_rate=0.05)["threshold"] == caching.EMBEDDING_ONLY_THRESHOLD
    # with the verifier on, the default is a floor below every calibration paraphrase: the verifier decides
    calibration = [s for s, p in zip(similarities, pairs) if p["split"] == "calibration" and p["same"]]
    assert caching.DEFAULT_THRESHOLD <= min(calibration) < caching.DEFAULT_THRESHOLD + 0.05


def test_rag_style_prompts_pair_an_excerpt_with_its_question():
    from helpers import config

    if not (config.DATA_DIR / "qa.jsonl").exists():
        pytest.skip("needs data/qa.jsonl")
    prompts = rag.rag_style_prompts(3, max_chars=600)
    assert len(prompts) == 3 and len(set(prompts)) == 3
    assert all("\n\nQuestion: " in prompt and len(prompt) < 600 + 300 for prompt in prompts)
    with pytest.raises(ValueError, match="fewer"):
        rag.rag_style_prompts(10_000)


# --- the verifier in the hit path (a fake verifier: no model) -----------------------------

class RefuseWord:
    """Refuses a candidate when the prompt contains ``word``; records what it was asked."""

    def __init__(self, word="off"):
        self.word, self.asked = word, []

    def verify_candidates(self, question, candidates):
        from helpers.cache_verifier import Verdict

        self.asked.append((question, list(candidates)))
        return [Verdict(self.word not in question.split(), ("fake",)) for _ in candidates]


def test_verifier_is_on_by_default_and_built_lazily(monkeypatch):
    from helpers import cache_verifier

    built = []
    fake = RefuseWord()
    monkeypatch.setattr(cache_verifier, "load_or_train_verifier", lambda: built.append(1) or fake)
    cache = SemanticCache(embedder=BagOfWordsEmbedder())
    assert cache.verifies and cache.threshold == caching.DEFAULT_THRESHOLD and not built
    cache.put("turn on sync now", "Settings > Sync.")
    assert built == []  # storing needs no verifier
    assert cache.get("turn on sync now please") == "Settings > Sync."
    assert built == [1] and fake.asked[0][1] == ["turn on sync now"]
    assert cache.get("turn off sync now") is None  # similar enough, refused by the verifier
    assert cache.stats()["rejections"] == 1


def test_verifier_off_uses_the_embedding_threshold():
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None)
    assert not cache.verifies and cache.threshold == caching.EMBEDDING_ONLY_THRESHOLD
    cache.put("turn on sync now", "Settings > Sync.")
    assert cache.get("turn on sync now") == "Settings > Sync."
    assert cache.get("turn off sync now") is None  # 3 of 4 words: below 0.96


def test_rule_vetoed_candidate_is_not_served_but_the_next_verified_one_is():
    from helpers.cache_verifier import RuleVerifier

    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=RuleVerifier(), threshold=0.3, candidates=3)
    cache.put("how do i turn on camera uploads", "ON answer")
    assert cache.get("how do i turn off camera uploads") is None  # opposite actions: vetoed
    found = cache.lookup("how do i turn off camera uploads")
    assert found.rejected and found.rejected[0][0] == "how do i turn on camera uploads"
    assert "opposite actions (on/off)" in found.rejected[0][1]
    cache.put("please turn off my camera uploads", "OFF answer")  # less similar than the ON entry, but the same
    found = cache.lookup("how do i turn off camera uploads")
    assert found.response == "OFF answer" and len(found.rejected) == 1


def test_best_ranked_verified_candidate_is_served():
    class AcceptOnly:
        def verify_candidates(self, question, candidates):
            from helpers.cache_verifier import Verdict
            return [Verdict(candidate.endswith("b")) for candidate in candidates]

    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=AcceptOnly(), threshold=0.3, candidates=3)
    cache.put("red green blue a", "A")
    cache.put("red green blue yellow b", "B")
    found = cache.lookup("red green blue a")
    assert found.response == "B" and found.similarity < 1.0 and len(found.rejected) == 1


def test_verified_namespaces_never_leak():
    fake = RefuseWord("nothing-refused")
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=fake, threshold=0.3)
    cache.put("refund window", "30 days", namespace="tenant-a")
    assert cache.get("refund window", namespace="tenant-b") is None
    assert fake.asked == []  # nothing from tenant-a was even offered as a candidate


def test_capacity_is_per_namespace():
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, threshold=0.99, max_entries=2)
    cache.put("bravo one", "B1", namespace="b")
    cache.put("bravo two", "B2", namespace="b")
    for index in range(10):  # tenant a fills its own space many times over
        cache.put(f"alpha item {index}", f"A{index}", namespace="a")
    assert cache.get("bravo one", namespace="b") == "B1" and cache.get("bravo two", namespace="b") == "B2"
    assert cache.get("alpha item 9", namespace="a") == "A9" and cache.get("alpha item 0", namespace="a") is None
    assert len(cache) == 4 and cache.stats()["evictions"] == 8
    assert cache._indexes["a"].ntotal == 2 and cache._indexes["b"].ntotal == 2


def test_bad_verifier_and_candidates_are_rejected():
    with pytest.raises(ValueError, match="verify_candidates"):
        SemanticCache(embedder=BagOfWordsEmbedder(), verifier="model")
    with pytest.raises(ValueError, match="candidates"):
        SemanticCache(embedder=BagOfWordsEmbedder(), candidates=0)


def test_lookup_outcomes_judge_own_entry_wrong_entry_and_false_hits():
    cache = SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, threshold=0.5)
    caching.populate(cache, [("alpha bravo charlie", "A"), ("delta echo foxtrot", "D")])
    pairs = [{"id": "p1", "a": "alpha bravo charlie", "b": "alpha bravo charlie x", "same": True},
             {"id": "p2", "a": "golf hotel india", "b": "delta echo foxtrot y", "same": True},  # served D: wrong
             {"id": "n1", "a": "delta echo foxtrot", "b": "delta echo foxtrot z", "same": False},
             {"id": "n2", "a": "alpha bravo charlie", "b": "kilo lima mike", "same": False}]
    outcomes = caching.lookup_outcomes(cache, pairs)
    assert [row["correct_hit"] for row in outcomes] == [True, False, False, False]
    assert [row["wrong_entry_hit"] for row in outcomes] == [False, True, False, False]
    assert [row["false_hit"] for row in outcomes] == [False, False, True, False]
    rates = caching.outcome_rates(outcomes)
    assert rates["hit_rate"]["value"] == 0.5 and rates["false_hit_rate"]["value"] == 0.5
    assert rates["wrong_entry_hits"] == 1 and rates["hit_rate"]["n"] == 2
    with pytest.raises(ValueError, match="both"):
        caching.outcome_rates(outcomes[:2])


def test_put_many_equals_put_one_by_one():
    entries = [("alpha one", "A"), ("bravo two", "B"), ("Alpha  ONE", "A2"), ("charlie three", "C")]
    one, many = (SemanticCache(embedder=BagOfWordsEmbedder(), verifier=None, max_entries=2) for _ in range(2))
    for prompt, response in entries:
        one.put(prompt, response)
    many.put_many(entries)
    assert many.embedder.calls == 1
    stored = [[(e.prompt, e.response) for e in cache._entries.values()] for cache in (one, many)]
    assert stored[0] == stored[1] == [("Alpha  ONE", "A2"), ("charlie three", "C")]
    assert many.stats()["evictions"] == one.stats()["evictions"] == 1
