"""Approximate nearest-neighbour search at scale (notebook 02's large-corpus demo).

:func:`clustered_vectors` draws seeded unit vectors shaped like sentence embeddings;
:func:`build_ivf_index` trains a FAISS IVF index over them; :func:`neighbour_recall`
compares its answers with exact search; :func:`plot_nprobe_tradeoff` draws speed against recall.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .rag import normalise_rows


def clustered_vectors(n: int, dim: int = 384, topics: int = 100, subtopics: int = 20, subtopic_spread: float = 0.5,
                      spread: float = 1.5, shared_direction: float = 0.3, seed: int = 0) -> np.ndarray:
    """``n`` seeded unit vectors shaped like sentence embeddings of a large corpus.

    Real embeddings are not uniform on the sphere: they bunch around topics, topics
    split into subtopics of unequal size, and all vectors share a common direction.
    Each vector here is a subtopic centre (a topic centre plus Gaussian noise of
    relative size ``subtopic_spread``) plus its own Gaussian noise of relative size
    ``spread`` plus ``shared_direction`` times one common direction, normalised.
    Uniform random vectors would be the worst case for an approximate index and tight,
    well-separated clusters the easiest; this sits in between. Draw queries from the
    same call (e.g. the last rows) so that they follow the same distribution.
    """
    if n < 1 or dim < 1 or topics < 1 or subtopics < 1:
        raise ValueError("n, dim, topics and subtopics must be positive.")
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    topic_centres = normalise_rows(rng.standard_normal((topics, dim)))
    subtopic_centres = normalise_rows(
        np.repeat(topic_centres, subtopics, axis=0)
        + rng.standard_normal((topics * subtopics, dim)).astype(np.float32) * (subtopic_spread / np.sqrt(dim)))
    sizes = rng.dirichlet(np.full(len(subtopic_centres), 2.0))  # unequal subtopic sizes
    assignment = rng.choice(len(subtopic_centres), size=n, p=sizes)
    out = np.empty((n, dim), dtype=np.float32)
    block = 50_000
    for start in range(0, n, block):
        rows = assignment[start:start + block]
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32) * (spread / np.sqrt(dim))
        out[start:start + len(rows)] = subtopic_centres[rows] + noise + shared_direction * common
    return normalise_rows(out)


def build_ivf_index(vectors: np.ndarray, nlist: int, train_size: int | None = None, seed: int = 0):
    """A trained ``faiss.IndexIVFFlat`` (inner product) over ``vectors`` with ``nlist`` k-means cells.

    k-means is trained on a seeded sample of ``train_size`` vectors (default 64 per cell),
    which is enough to place the cells and much faster than training on everything.
    """
    import faiss

    vectors = normalise_rows(vectors)
    if nlist < 1 or nlist > len(vectors):
        raise ValueError(f"nlist must be between 1 and the number of vectors ({len(vectors)}), got {nlist}.")
    train_size = min(len(vectors), train_size or 64 * nlist)
    sample = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), train_size, replace=False))]
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(sample)
    index.add(vectors)
    return index


def plot_nprobe_tradeoff(rows: Sequence[dict], exact_ms_per_query: float, path=None):
    """Recall@10 against milliseconds per query for each ``nprobe``, with exact search as a reference point."""
    from .plots import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.5))
    xs, ys = [row["ms_per_query"] for row in rows], [row["recall_at_10"] for row in rows]
    axis.plot(xs, ys, marker="o", color="#4C72B0", label="IVF, nprobe cells searched")
    for row in rows:
        axis.annotate(f"nprobe={row['nprobe']}", (row["ms_per_query"], row["recall_at_10"]),
                      textcoords="offset points", xytext=(4, -10), fontsize=7)
    axis.plot([exact_ms_per_query], [1.0], marker="s", color="#C44E52", linestyle="none", label="exact (flat)")
    axis.set_xscale("log")
    axis.set_xlabel("ms per query (log scale)")
    axis.set_ylabel("recall@10 vs exact")
    axis.set_title("Approximate search: speed against recall")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def neighbour_recall(approximate_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    """Average fraction of each query's true top-``k`` neighbours that the approximate search found."""
    approximate_ids, exact_ids = np.asarray(approximate_ids), np.asarray(exact_ids)
    if approximate_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError(f"{approximate_ids.shape[0]} approximate rows but {exact_ids.shape[0]} exact rows.")
    if approximate_ids.shape[1] < k or exact_ids.shape[1] < k:
        raise ValueError(f"Both id arrays need at least k={k} columns.")
    found = [len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approximate_ids, exact_ids)]
    return float(np.mean(found))
