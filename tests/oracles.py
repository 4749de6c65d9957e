"""Test-only reference implementations (oracles) that the vectorised stage code is checked against.

Plain Python, slow on purpose: union-find components, the scalar keeper rule, per-bucket pairs,
and exact Jaccard.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def bucket_pairs(ids: list[str], sigs: np.ndarray, threshold: float, max_all_pairs: int = 64) -> list[tuple[str, str, float]]:
    """Verified candidate pairs of one LSH bucket: each member is linked to the first member (in
    id order) whose estimated Jaccard with it reaches the threshold, so that a banding false
    positive does not join two clusters. Buckets over ``max_all_pairs`` members are compared
    against a few pivots only (documented approximation for boilerplate-sized buckets)."""
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    ids = [ids[i] for i in order]
    sigs = sigs[order]
    out = []
    pivots = range(len(ids)) if len(ids) <= max_all_pairs else range(min(len(ids), 8))
    for j in range(1, len(ids)):
        for i in pivots:
            if i >= j:
                break
            est = float(np.mean(sigs[i] == sigs[j]))
            if est >= threshold:
                out.append((ids[i], ids[j], est))
                break
    return out


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two sets of shingle hashes (sorted unique arrays)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


class UnionFind:
    """Connected components of an edge list (path halving, union by smaller id as root, so
    the root of every component is its smallest id: deterministic)."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        p = self.parent.setdefault(x, x)
        while p != x:
            gp = self.parent.setdefault(p, p)
            self.parent[x] = gp
            x, p = p, gp
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra

    def components(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return {k: sorted(v) for k, v in sorted(out.items())}


def components(edges: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    uf = UnionFind()
    for a, b in edges:
        uf.union(a, b)
    return uf.components()


def choose_keeper(members: list[dict], source_priority: list[str]) -> dict:
    """The member to keep: best source priority, then higher quality_score, then smallest id."""
    rank = {s: i for i, s in enumerate(source_priority)}

    def key(m):
        score = m.get("quality_score")
        return (rank.get(m["source"], len(rank)), -(score if score is not None else -1.0), m["id"])

    return min(members, key=key)
