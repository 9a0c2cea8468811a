"""Caching for LLM serving: the KV cache, prefix caching and response caches.

Three layers, from inside the model outwards:

- the **KV cache** keeps each token's attention keys and values so that decoding
  step *t* does not recompute steps 1..t-1 (:func:`kv_cache_bytes_per_token` is its price);
- **prefix caching** computes the KV cache of a shared prompt prefix (a long system
  prompt) once and gives every request a copy (:func:`build_prefix_cache`,
  :func:`time_to_first_token`);
- **response caches** skip the model entirely: :class:`LRUCache` answers repeated
  prompts (exact match after normalisation) and :class:`SemanticCache` answers
  prompts that *mean* the same as an earlier one (embedding similarity).

:class:`SemanticCache` is shared by the serving notebook; its constructor,
``get``, ``put``, ``lookup`` and ``stats`` are a stable API. It verifies each candidate
before serving it (:mod:`helpers.cache_verifier`) unless built with ``verifier=None``.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import config
from .generation import forward_argument_names

# With the verifier on (the default), DEFAULT_THRESHOLD is the *candidate floor*: stored prompts at least this
# similar (cosine, all-MiniLM-L6-v2) are handed to the verifier, which decides. 0.40 sits just below the least
# similar calibration paraphrase in data/cache_pairs.jsonl (0.42), so the embedding alone drops no paraphrase
# we know of; the verifier must refuse everything that is not the same question.
DEFAULT_THRESHOLD = 0.40
DEFAULT_CANDIDATES = 3  # candidates verified per lookup (the best-ranked one that passes is served)
# With the verifier off, a hit is decided by similarity alone: notebook 08 chooses this on the calibration pairs
# (the lowest threshold whose false-hit rate on near misses is at most 5 %). Those near misses are so close in
# wording that, at this threshold, almost no paraphrase hits either: a forgiving exact-match cache.
EMBEDDING_ONLY_THRESHOLD = 0.96
DEFAULT_MAX_ENTRIES = 10_000

PREFIX_ARTICLES = 2  # help-center articles in the shared system prompt (about 1,100 tokens)
DEFAULT_NAMESPACE = "default"
_ROUNDING = 1e-6  # float32 inner products of identical unit vectors can land just below 1.0


def sizes() -> dict:
    """The KV-cache and prefix-cache sizes for the active profile (from :func:`helpers.config.profile`)."""
    active = config.profile()
    return {"kv_prompts": active.kv_cache_prompts, "kv_new_tokens": active.kv_cache_new_tokens,
            "kv_repeats": active.kv_cache_repeats, "prefix_requests": active.prefix_requests,
            "prefix_articles": PREFIX_ARTICLES}


def normalize_prompt(prompt: str) -> str:
    """Lower-case, collapse runs of whitespace and strip: the key of an exact-match cache.

    Raises ``ValueError`` for anything but a non-blank string.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"A prompt must be a string, not {type(prompt).__name__}.")
    normalized = re.sub(r"\s+", " ", prompt).strip().lower()
    if not normalized:
        raise ValueError("The prompt is empty: pass the user's text "
                         "(caching an empty prompt would match nothing useful).")
    return normalized


def _check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise ValueError("namespace must be a non-empty string, e.g. a tenant id or a hash of the system prompt.")
    return namespace


def _check_response(response: str) -> str:
    if not isinstance(response, str):
        raise ValueError(f"A cached response must be a string, not {type(response).__name__}.")
    return response


def _check_max_entries(max_entries: int) -> int:
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ValueError(f"max_entries must be an integer of at least 1, got {max_entries!r}.")
    return max_entries


# --- exact-match cache ------------------------------------------------------------------

class LRUCache:
    """Exact-match response cache with least-recently-used eviction.

    Prompts are compared after :func:`normalize_prompt` (case and whitespace do not
    matter, every other character does). When more than ``max_entries`` are stored,
    the entry that was read or written longest ago is dropped. Namespaces keep
    tenants (or system prompts) apart: a prompt cached in one is a miss in another.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.max_entries = _check_max_entries(max_entries)
        self._entries: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, prompt: str, namespace: str = DEFAULT_NAMESPACE) -> str | None:
        """The cached response for ``prompt`` in ``namespace``, or ``None`` on a miss."""
        key = (_check_namespace(namespace), normalize_prompt(prompt))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
            return None

    def put(self, prompt: str, response: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Store ``response`` for ``prompt`` in ``namespace`` (replacing an older answer)."""
        key = (_check_namespace(namespace), normalize_prompt(prompt))
        response = _check_response(response)
        with self._lock:
            self._entries[key] = response
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict:
        """Hits, misses, hit rate (hits / lookups), stored entries and evictions."""
        lookups = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hits / lookups if lookups else 0.0,
                "entries": len(self._entries), "evictions": self.evictions}


# --- semantic cache ---------------------------------------------------------------------

@dataclass
class CacheEntry:
    """One stored prompt and its response."""

    prompt: str
    response: str
    namespace: str
    created_s: float


@dataclass(frozen=True)
class CacheLookup:
    """What a semantic lookup found: the response (``None`` on a miss) and the stored prompt it came from.

    On a hit, ``similarity`` and ``matched_prompt`` belong to the served entry; on a miss, to the most
    similar stored prompt (``None`` when the namespace is empty). ``rejected`` lists the candidates the
    verifier refused, as ``(prompt, reasons)``.
    """

    response: str | None
    similarity: float | None
    matched_prompt: str | None
    rejected: tuple = ()

    @property
    def hit(self) -> bool:
        """True when a response was returned."""
        return self.response is not None


_TRAINED = "trained"


class SemanticCache:
    """Response cache that also answers prompts *similar in meaning* to a stored one, after verifying them.

    Each prompt is embedded (``embedder.encode([text])``, default all-MiniLM-L6-v2 via
    :func:`helpers.models.load_embedder`, loaded on first use), L2-normalised, and searched in a FAISS
    inner-product index, so the score is the cosine similarity.

    - **Verification (on by default).** The ``candidates`` most similar stored prompts of the same namespace
      that score at least ``threshold`` (default :data:`DEFAULT_THRESHOLD`, a permissive floor) are handed,
      most similar first, to ``verifier.verify_candidates(prompt, candidate_prompts)``; the most similar one
      it accepts is served. The default verifier is
      :func:`helpers.cache_verifier.load_or_train_verifier` (rule checks veto, a cross-encoder fine-tuned from
      MiniLM decides the rest), trained or loaded on the first lookup that has a candidate. Any object with
      ``verify_candidates`` works (:class:`helpers.cache_verifier.RuleVerifier` for the rules alone).
    - ``verifier=None`` turns verification off: a lookup then hits when the most similar stored prompt scores
      at least ``threshold`` (default :data:`EMBEDDING_ONLY_THRESHOLD`).
    - **Namespaces**: one FAISS index per namespace; a tenant (or a system prompt) never receives an answer
      cached under another.
    - **Eviction**: ``max_entries`` is the capacity *of each namespace*; past it, the namespace's least recently
      used entry is dropped (stored or served by a hit counts as used), so one tenant never evicts another's
      entries. Evicted vectors are removed from their index with ``remove_ids``.
    - **TTL**: with ``ttl_s`` set, entries older than ``ttl_s`` seconds (since they were stored) are never
      returned and are dropped at the next lookup in their namespace. ``clock`` (default ``time.monotonic``)
      can be replaced in tests.
    - Storing a prompt that is already cached (same normalised text, same namespace) replaces its response.

    Thread-safe: one lock guards the indexes and statistics.
    """

    def __init__(self, embedder=None, threshold: float | None = None,
                 max_entries: int = DEFAULT_MAX_ENTRIES, ttl_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, verifier=_TRAINED,
                 candidates: int = DEFAULT_CANDIDATES):
        if threshold is None:
            threshold = EMBEDDING_ONLY_THRESHOLD if verifier is None else DEFAULT_THRESHOLD
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ValueError(f"threshold must be a cosine similarity in (0, 1], got {threshold!r}; "
                             f"{DEFAULT_THRESHOLD} is the workbook's candidate floor with the verifier on, "
                             f"{EMBEDDING_ONLY_THRESHOLD} its threshold without it.")
        if ttl_s is not None and (isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or ttl_s <= 0):
            raise ValueError(f"ttl_s must be a positive number of seconds or None (never expire), got {ttl_s!r}.")
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be an integer of at least 1, got {candidates!r}.")
        if verifier is not None and verifier != _TRAINED and not hasattr(verifier, "verify_candidates"):
            raise ValueError("verifier must be None (off), 'trained' (the default) or an object with "
                             "verify_candidates(prompt, candidate_prompts).")
        self.threshold = float(threshold)
        self.max_entries = _check_max_entries(max_entries)
        self.ttl_s = ttl_s
        self.candidates = candidates if verifier is not None else 1
        self._embedder = embedder
        self._verifier = verifier
        self._clock = clock
        self._lock = threading.RLock()
        self._indexes: dict[str, object] = {}  # namespace -> faiss.IndexIDMap(IndexFlatIP)
        self._entries: dict[int, CacheEntry] = {}  # id -> entry
        self._recency: dict[str, OrderedDict[int, None]] = {}  # namespace -> ids, least recently used first
        self._ids_by_key: dict[tuple[str, str], int] = {}  # (namespace, normalised prompt) -> id
        self._next_id = 0
        self.hits = self.misses = self.evictions = self.expirations = self.rejections = 0

    # -- embedding and verifying -------------------------------------------------------
    @property
    def embedder(self):
        """The sentence embedder (loaded on first use when none was given)."""
        if self._embedder is None:
            from .models import load_embedder

            self._embedder = load_embedder()
        return self._embedder

    @property
    def verifier(self):
        """The verifier (``None`` when off); the trained one is built or loaded on first use."""
        if self._verifier == _TRAINED:
            from .cache_verifier import load_or_train_verifier

            self._verifier = load_or_train_verifier()
        return self._verifier

    @property
    def verifies(self) -> bool:
        """True when candidates are verified before they are served."""
        return self._verifier is not None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per text."""
        vectors = np.asarray(self.embedder.encode(list(texts)), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"The embedder returned shape {vectors.shape} for {len(texts)} texts; "
                             "it must return one vector per text.")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12))

    def _index(self, namespace: str, dimension: int):
        import faiss

        if namespace not in self._indexes:
            self._indexes[namespace] = faiss.IndexIDMap(faiss.IndexFlatIP(dimension))
            self._recency[namespace] = OrderedDict()
        return self._indexes[namespace]

    # -- housekeeping ------------------------------------------------------------------
    def _remove(self, entry_id: int) -> CacheEntry:
        entry = self._entries.pop(entry_id)
        self._recency[entry.namespace].pop(entry_id, None)
        self._ids_by_key.pop((entry.namespace, normalize_prompt(entry.prompt)), None)
        self._indexes[entry.namespace].remove_ids(np.array([entry_id], dtype=np.int64))
        return entry

    def _expire(self, namespace: str) -> None:
        if self.ttl_s is None or namespace not in self._recency:
            return
        now = self._clock()
        expired = [entry_id for entry_id in self._recency[namespace]
                   if now - self._entries[entry_id].created_s >= self.ttl_s]
        for entry_id in expired:
            self._remove(entry_id)
        self.expirations += len(expired)

    def _serve(self, entry_id: int, similarity: float, rejected: tuple) -> CacheLookup:
        entry = self._entries[entry_id]
        self._recency[entry.namespace].move_to_end(entry_id)
        self.hits += 1
        return CacheLookup(entry.response, similarity, entry.prompt, rejected)

    # -- public API --------------------------------------------------------------------
    def lookup(self, prompt: str, namespace: str = DEFAULT_NAMESPACE) -> CacheLookup:
        """Search the cache; the result carries the response (or ``None``), the match and what was refused."""
        normalize_prompt(prompt)
        _check_namespace(namespace)
        vector = self.embed([prompt])
        with self._lock:
            self._expire(namespace)
            index = self._indexes.get(namespace)
            if index is None or index.ntotal == 0:
                self.misses += 1
                return CacheLookup(None, None, None)
            scores, ids = index.search(vector, min(self.candidates, index.ntotal))
            found = [(float(score), int(entry_id)) for score, entry_id in zip(scores[0], ids[0]) if entry_id >= 0]
            best_similarity, best_id = found[0]
            passing = [(score, entry_id) for score, entry_id in found if score >= self.threshold - _ROUNDING]
            if passing and not self.verifies:
                return self._serve(best_id, best_similarity, ())
            rejected = ()
            if passing:
                prompts = [self._entries[entry_id].prompt for _, entry_id in passing]
                verdicts = self.verifier.verify_candidates(prompt, prompts)
                for (score, entry_id), candidate, verdict in zip(passing, prompts, verdicts):
                    if verdict.same:
                        return self._serve(entry_id, score, rejected)
                    rejected += ((candidate, tuple(verdict.reasons)),)
                    self.rejections += 1
            self.misses += 1
            return CacheLookup(None, best_similarity, self._entries[best_id].prompt, rejected)

    def get(self, prompt: str, namespace: str = DEFAULT_NAMESPACE) -> str | None:
        """The cached response for a prompt similar enough to ``prompt`` in ``namespace``, else ``None``."""
        return self.lookup(prompt, namespace).response

    def put(self, prompt: str, response: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Store ``response`` for ``prompt`` in ``namespace``; past ``max_entries`` there, drop its least recent."""
        _check_namespace(namespace)
        normalize_prompt(prompt)
        response = _check_response(response)
        self._store(prompt, response, namespace, self.embed([prompt]))

    def put_many(self, entries: Sequence[tuple[str, str]], namespace: str = DEFAULT_NAMESPACE,
                 batch_size: int = 256) -> None:
        """:meth:`put` for many ``(prompt, response)`` pairs, embedded in batches (same result, far fewer calls)."""
        entries = [(prompt, _check_response(response)) for prompt, response in entries]
        for prompt, _ in entries:
            normalize_prompt(prompt)
        _check_namespace(namespace)
        for start in range(0, len(entries), batch_size):
            chunk = entries[start:start + batch_size]
            vectors = self.embed([prompt for prompt, _ in chunk])
            for (prompt, response), vector in zip(chunk, vectors):
                self._store(prompt, response, namespace, vector[None, :])

    def _store(self, prompt: str, response: str, namespace: str, vector: np.ndarray) -> None:
        key = (namespace, normalize_prompt(prompt))
        with self._lock:
            if key in self._ids_by_key:
                self._remove(self._ids_by_key[key])
            entry_id = self._next_id
            self._next_id += 1
            self._index(namespace, vector.shape[1]).add_with_ids(vector, np.array([entry_id], dtype=np.int64))
            self._entries[entry_id] = CacheEntry(prompt, response, namespace, self._clock())
            self._recency[namespace][entry_id] = None
            self._ids_by_key[key] = entry_id
            while len(self._recency[namespace]) > self.max_entries:
                self._remove(next(iter(self._recency[namespace])))
                self.evictions += 1

    def clear(self) -> None:
        """Drop every entry (statistics are kept)."""
        with self._lock:
            self._indexes.clear()
            self._entries.clear()
            self._recency.clear()
            self._ids_by_key.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def namespaces(self) -> list[str]:
        """Namespaces that currently hold at least one entry."""
        return sorted(namespace for namespace, ids in self._recency.items() if ids)

    def stats(self) -> dict:
        """Hits, misses, hit rate (hits / lookups), entries, evictions, TTL expirations and verifier rejections."""
        lookups = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hits / lookups if lookups else 0.0,
                "entries": len(self._entries), "evictions": self.evictions, "expirations": self.expirations,
                "rejections": self.rejections}


# --- choosing the threshold from labelled pairs ------------------------------------------

def pair_similarities(embedder, first: Sequence[str], second: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of ``first[i]`` and ``second[i]`` for every i."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} first texts but {len(second)} second texts: pass pairs.")
    if not first:
        raise ValueError("Pass at least one pair.")
    vectors = np.asarray(embedder.encode(list(first) + list(second), batch_size=batch_size), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.sum(vectors[: len(first)] * vectors[len(first):], axis=1)


def threshold_sweep(similarities: Sequence[float], same: Sequence[bool],
                    thresholds: Sequence[float] | None = None) -> list[dict]:
    """Precision, recall (hit rate on same-meaning pairs) and false-hit rate per threshold.

    A pair counts as a cache hit when its similarity is at least the threshold.
    ``false_hit_rate`` is the fraction of different-meaning pairs that would hit;
    ``precision`` is the fraction of hits that were right (1.0 when nothing hits).
    """
    similarities = np.asarray(similarities, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if similarities.shape != same.shape or similarities.size == 0:
        raise ValueError("Pass one similarity per label, at least one pair.")
    if same.all() or not same.any():
        raise ValueError("The pairs need both same-meaning and different-meaning examples.")
    if thresholds is None:
        thresholds = np.round(np.arange(0.30, 1.0001, 0.01), 2)
    rows = []
    for threshold in thresholds:
        hit = similarities >= threshold
        true_hits = int(np.sum(hit & same))
        false_hits = int(np.sum(hit & ~same))
        rows.append({
            "threshold": float(threshold),
            "precision": true_hits / (true_hits + false_hits) if true_hits + false_hits else 1.0,
            "recall": true_hits / int(same.sum()),
            "false_hit_rate": false_hits / int((~same).sum()),
        })
    return rows


def choose_threshold(sweep: Sequence[dict], max_false_hit_rate: float = 0.05) -> dict:
    """The sweep row with the lowest threshold whose false-hit rate is at most ``max_false_hit_rate``."""
    allowed = [row for row in sweep if row["false_hit_rate"] <= max_false_hit_rate]
    if not allowed:
        raise ValueError(f"No threshold in the sweep keeps the false-hit rate at or below {max_false_hit_rate:.0%}; "
                         "extend the sweep towards 1.0.")
    return min(allowed, key=lambda row: row["threshold"])


# --- measuring a semantic cache on lookups against a populated cache -------------------

def populate(cache: SemanticCache, entries: Sequence[tuple[str, str]], namespace: str = DEFAULT_NAMESPACE) -> int:
    """Store ``(prompt, response)`` entries (in order; a repeated prompt replaces its response); return the size."""
    cache.put_many(list(entries), namespace=namespace)
    return len(cache)


def lookup_outcomes(cache: SemanticCache, pairs: Sequence[dict], namespace: str = DEFAULT_NAMESPACE,
                    progress: bool = False, desc: str = "lookups") -> list[dict]:
    """Look up each pair's ``b`` in a cache that holds each pair's ``a`` (and other entries); judge the result.

    A paraphrase (``same``) is a **correct hit** only when the served entry is its own ``a``; served from
    another entry it is a **wrong-entry hit**. A near miss that is served anything is a **false hit**.
    """
    from tqdm.auto import tqdm

    outcomes = []
    for pair in tqdm(pairs, desc=desc, disable=not progress):
        found = cache.lookup(pair["b"], namespace=namespace)
        own = found.hit and normalize_prompt(found.matched_prompt) == normalize_prompt(pair["a"])
        outcomes.append({"id": pair["id"], "same": bool(pair["same"]), "hit": found.hit,
                         "correct_hit": bool(pair["same"] and own),
                         "wrong_entry_hit": bool(pair["same"] and found.hit and not own),
                         "false_hit": bool(not pair["same"] and found.hit),
                         "matched_prompt": found.matched_prompt, "similarity": found.similarity,
                         "rejected": found.rejected})
    return outcomes


def outcome_rates(outcomes: Sequence[dict]) -> dict:
    """Hit rate on paraphrases (own entry), false-hit rate on near misses (Wilson 95 %) and wrong-entry hits."""
    from .metrics import proportion

    paraphrases = [row for row in outcomes if row["same"]]
    near_misses = [row for row in outcomes if not row["same"]]
    if not paraphrases or not near_misses:
        raise ValueError("Pass outcomes of both paraphrases and near misses.")
    return {"hit_rate": proportion([row["correct_hit"] for row in paraphrases]),
            "false_hit_rate": proportion([row["false_hit"] for row in near_misses]),
            "wrong_entry_hits": sum(row["wrong_entry_hit"] for row in paraphrases)}


# --- KV cache and prefix caching ---------------------------------------------------------

def kv_cache_bytes_per_token(config, bytes_per_value: float = 2.0) -> float:
    """Bytes the KV cache holds per token: 2 (K and V) x layers x KV heads x head dim x bytes.

    ``config`` is a transformers model config; models without grouped-query
    attention have as many KV heads as attention heads.
    """
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * layers * kv_heads * head_dim * bytes_per_value


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, bytes_per_value: float = 2.0,
                   tokens: int = 1, batch_size: int = 1) -> float:
    """KV-cache bytes for ``batch_size`` sequences of ``tokens`` tokens."""
    if min(layers, kv_heads, head_dim, tokens, batch_size) < 1 or bytes_per_value <= 0:
        raise ValueError("layers, kv_heads, head_dim, tokens and batch_size must be at least 1.")
    return 2 * layers * kv_heads * head_dim * bytes_per_value * tokens * batch_size


def cache_bytes(cache) -> int:
    """Bytes held by the key and value tensors of a transformers KV cache."""
    tensors = []
    for layer in getattr(cache, "layers", None) or []:
        tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    if not tensors:  # older transformers keep two lists of tensors
        tensors = list(getattr(cache, "key_cache", [])) + list(getattr(cache, "value_cache", []))
    return sum(t.numel() * t.element_size() for t in tensors if t is not None and hasattr(t, "numel"))


def chat_prefix_and_suffix(tokenizer, system_prompt: str, user_prompt: str):
    """Token ids of the chat-formatted system part and of the user turn that follows it.

    The two are tokenized separately and cut at a special-token boundary, so
    ``prefix + suffix`` is exactly the prompt the model sees with or without a
    prefix cache.
    """
    import torch

    system_text = tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}], tokenize=False)
    full_text = tokenizer.apply_chat_template(
        [{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt}],
        tokenize=False, add_generation_prompt=True)
    if not full_text.startswith(system_text):
        raise ValueError("The chat template does not render the system turn as a prefix of the conversation.")
    prefix = tokenizer(system_text, return_tensors="pt", add_special_tokens=False).input_ids
    suffix = tokenizer(full_text[len(system_text):], return_tensors="pt", add_special_tokens=False).input_ids
    return prefix, torch.cat([prefix, suffix], dim=1)


def build_prefix_cache(model, prefix_ids):
    """Run the model once over ``prefix_ids`` and return its KV cache (a ``DynamicCache``)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(prefix_ids.to(model.device), use_cache=True, **{forward_argument_names(model)[0]: cache})
    return cache


def generate_with_prefix(model, tokenizer, input_ids, max_new_tokens: int, prefix_cache=None):
    """Greedy generation of ``max_new_tokens`` after ``input_ids``; reuses a copy of ``prefix_cache`` if given.

    The cache is deep-copied first: ``generate`` appends to the cache it is given,
    and the shared prefix must stay untouched for the next request.
    """
    import torch

    options = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if prefix_cache is not None:
        options[forward_argument_names(model)[0]] = copy.deepcopy(prefix_cache)
    input_ids = input_ids.to(model.device)
    with torch.no_grad():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **options)
    return output[:, input_ids.shape[1]:]


def time_to_first_token(model, tokenizer, input_ids, prefix_cache=None, repeats: int = 3) -> float:
    """Median seconds from request to first generated token (one-token greedy generation)."""
    from .metrics import measure

    timing = measure(lambda: generate_with_prefix(model, tokenizer, input_ids, 1, prefix_cache),
                     repeats=repeats, warmup=1)
    return timing.median_s


def plot_threshold_sweep(sweep: Sequence[dict], chosen: float, similarities: Sequence[float], same: Sequence[bool]):
    """Left: precision, recall and false-hit rate against the threshold. Right: similarity histograms by kind."""
    from .plots import pyplot

    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    thresholds = [row["threshold"] for row in sweep]
    for key, label in (("precision", "precision of hits"), ("recall", "hit rate on paraphrases (recall)"),
                       ("false_hit_rate", "false-hit rate on near misses")):
        # precision is undefined where nothing hits: leave a gap instead of a misleading 1.0
        values = [np.nan if key == "precision" and row["recall"] == row["false_hit_rate"] == 0 else row[key]
                  for row in sweep]
        left.plot(thresholds, values, label=label)
    left.axvline(chosen, color="#C44E52", linestyle="--", label=f"chosen {chosen:.2f}")
    left.axhline(0.05, color="grey", linestyle=":", linewidth=1)
    left.set_xlabel("cosine-similarity threshold")
    left.set_ylim(-0.02, 1.02)
    left.set_title("A hit is similarity >= threshold")
    left.legend(fontsize=7, loc="center left")
    left.grid(alpha=0.3)
    similarities, same = np.asarray(similarities), np.asarray(same, dtype=bool)
    bins = np.linspace(min(0.0, similarities.min()), 1.0, 26)
    right.hist(similarities[same], bins=bins, alpha=0.6, label="paraphrase (should hit)")
    right.hist(similarities[~same], bins=bins, alpha=0.6, label="near miss (should miss)")
    right.axvline(chosen, color="#C44E52", linestyle="--")
    right.set_xlabel("cosine similarity of the pair")
    right.set_ylabel("pairs")
    right.set_title("Similarity by kind of pair")
    right.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure
