"""Pure pieces of fuzzy dedup after the signatures: candidate pairs from LSH buckets,
verification, connected components, keeper-verified removal.

These run in one process on small inputs (a bucket, a component); the stage distributes them.
"""

from __future__ import annotations

import numba
import numpy as np

# --------------------------------------------------------------------------- vectorised, per partition
# Documents are int64 numbers ``shard << 32 | row`` (dense, ordered, cheap to shuffle); the
# stage maps them back to ids only where it needs them (keeper choice, output).

def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array (plus len at the end)."""
    if len(sorted_keys) == 0:
        return np.zeros(1, np.int64)
    return np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1, len(sorted_keys)].astype(np.int64)


def _pairs_in_groups(starts: np.ndarray, max_all: int, pivots: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j, inside each group [starts[g], starts[g+1]): every pair in groups
    of at most ``max_all`` members, else each member with the group's first ``pivots`` members."""
    sizes = np.diff(starts)
    n = int(starts[-1])
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    g = np.repeat(np.arange(len(sizes)), sizes)
    pos = np.arange(n) - starts[g]
    count = np.where(sizes[g] <= max_all, pos, np.minimum(pos, pivots))
    total = int(count.sum())
    j = np.repeat(np.arange(n), count)
    within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    i = starts[g][j] + within
    return i, j


def bucket_candidates(key: np.ndarray, band: np.ndarray, doc: np.ndarray, exact: np.ndarray,
                      max_bucket: int = 64, pivots: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges from LSH buckets (rows that share ``key``), vectorised over a whole partition.

    ``band == -1`` rows are exact-duplicate buckets (key from the normalised-text hash): every
    member is linked to the smallest document (kind 0, certain). Band buckets (kind 1) are
    candidates to verify: members with equal exact hashes are collapsed to their smallest
    document first (the exact buckets link them), then every pair of the remaining members,
    or, in buckets of more than ``max_bucket`` distinct documents (boilerplate), each member
    with the first ``pivots`` members. Returns (a, b, kind) with a < b, unique."""
    order = np.lexsort((doc, exact, key))
    key, band, doc, exact = key[order], band[order], doc[order], exact[order]
    is_exact = band < 0
    out_a, out_b, out_k = [], [], []
    # exact buckets: star to the smallest document
    ke, de = key[is_exact], doc[is_exact]
    st = _group_starts(ke)
    first = np.repeat(de[st[:-1]], np.diff(st))
    m = de != first
    out_a.append(first[m])
    out_b.append(de[m])
    out_k.append(np.zeros(int(m.sum()), np.int8))
    # band buckets: one representative per (key, exact)
    kb, db, xb = key[~is_exact], doc[~is_exact], exact[~is_exact]
    rep = np.ones(len(kb), bool)
    rep[1:] = (kb[1:] != kb[:-1]) | (xb[1:] != xb[:-1])
    kb, db = kb[rep], db[rep]
    st = _group_starts(kb)
    multi = np.diff(st) > 1
    if multi.any():
        keep = np.repeat(multi, np.diff(st))
        kb, db = kb[keep], db[keep]
        st = _group_starts(kb)
        i, j = _pairs_in_groups(st, max_bucket, pivots)
        a, b = np.minimum(db[i], db[j]), np.maximum(db[i], db[j])
        out_a.append(a)
        out_b.append(b)
        out_k.append(np.ones(len(a), np.int8))
    return unique_edges(np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_k))


def unique_edges(a: np.ndarray, b: np.ndarray, kind: np.ndarray | None = None):
    """Unique (a, b) pairs, sorted; for a pair found both ways the smallest kind (exact) wins."""
    kind = np.zeros(len(a), np.int8) if kind is None else kind
    order = np.lexsort((kind, b, a))
    a, b, kind = a[order], b[order], kind[order]
    keep = np.ones(len(a), bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep], kind[keep]


@numba.njit(cache=True)
def _signature_estimate(sig, i, j):
    """Share of equal signature values of rows i and j."""
    same = 0
    for k in range(sig.shape[1]):
        if sig[i, k] == sig[j, k]:
            same += 1
    return same / sig.shape[1]


@numba.njit(cache=True)
def _jaccard_sorted(off, vals, i, j):
    """Exact Jaccard of the sorted unique sets ``vals[off[i]:off[i + 1]]`` and ``...[j]`` (a merge)."""
    x, xe, y, ye = off[i], off[i + 1], off[j], off[j + 1]
    na, nb, inter = xe - x, ye - y, 0
    while x < xe and y < ye:
        if vals[x] == vals[y]:
            inter += 1
            x += 1
            y += 1
        elif vals[x] < vals[y]:
            x += 1
        else:
            y += 1
    union = na + nb - inter
    return inter / union if union > 0 else 1.0


@numba.njit(cache=True)
def _verify(sig, off, vals, ia, ib, est, jac):
    for p in range(len(ia)):
        est[p] = _signature_estimate(sig, ia[p], ib[p])
        jac[p] = _jaccard_sorted(off, vals, ia[p], ib[p])


def verify_pairs(sig: np.ndarray, offsets: np.ndarray, values: np.ndarray, ia: np.ndarray,
                 ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(estimated Jaccard from the signatures, exact Jaccard of the shingle sets) of the pairs
    (ia[p], ib[p]) of documents whose signatures are ``sig`` rows and whose sorted unique
    shingle hashes are ``values[offsets[i]:offsets[i + 1]]``. One compiled pass, no copies."""
    n = len(ia)
    est, jac = np.zeros(n), np.zeros(n)
    if n:
        _verify(np.ascontiguousarray(sig), offsets.astype(np.int64), values, ia.astype(np.int64), ib.astype(np.int64), est, jac)
    return est, jac


def components_min_label(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of an edge list in one process (scipy): (node, root) for every node
    that has an edge, root = the smallest node of its component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    if len(nodes) == 0:
        return nodes, nodes
    n, m = len(nodes), len(a)
    graph = coo_matrix((np.ones(m, np.int8), (inv[:m], inv[m:])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    root = np.full(label.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(root, label, nodes)  # nodes are sorted: the first of each label is its min
    return nodes, root[label]


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One large-star step (Kiveris et al. 2014) over all edges of the nodes ``u`` (each edge
    given in both directions): every larger neighbour of u is linked to the smallest node of
    u's neighbourhood including u. Returns the new edges (x, y), x > y."""
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    st = _group_starts(u)
    m = np.minimum(np.minimum.reduceat(v, st[:-1]) if len(u) else v, u[st[:-1]] if len(u) else u)
    mu = np.repeat(m, np.diff(st))
    sel = v > u
    return v[sel], mu[sel]


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One small-star step over edges (u, v) with u > v, grouped by u: u and its smaller
    neighbours are all linked to the smallest of them. Returns edges (x, y), x > y."""
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    st = _group_starts(u)
    if len(u) == 0:
        return u, v
    m = np.minimum.reduceat(v, st[:-1])
    mu = np.repeat(m, np.diff(st))
    x = np.concatenate([v, u[st[:-1]]])
    y = np.concatenate([mu, m])
    sel = x != y
    a, b, _ = unique_edges(x[sel], y[sel])
    return a, b


def star_violations(u: np.ndarray, v: np.ndarray) -> int:
    """Nodes (of the ``u`` given, each edge in both directions) that are neither a root (all
    neighbours larger) nor a leaf (exactly one neighbour, smaller): 0 iff the graph is a forest
    of stars around each component's smallest node."""
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    st = _group_starts(u)
    if len(u) == 0:
        return 0
    first = u[st[:-1]]
    mn = np.minimum.reduceat(v, st[:-1])
    deg = np.diff(st)
    root = mn > first
    leaf = (deg == 1) & (mn < first)
    return int((~(root | leaf)).sum())


# --------------------------------------------------------------------------- keeper-verified removal

def keeper_order(root: np.ndarray, ids: np.ndarray, source_rank: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Members sorted by component, then keeper order inside it: best source rank, then higher
    quality_score (missing = lowest), then smallest id."""
    s = np.where(np.isnan(score), -np.inf, score)
    return np.lexsort((ids, -s, source_rank, root))


def exact_firsts(comp_starts: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """For members already in keeper order: the index of the first member (in keeper order) of
    the same component with the same normalised-text hash (itself if it is the first)."""
    n = len(exact)
    comp = np.repeat(np.arange(len(comp_starts) - 1), np.diff(comp_starts))
    order = np.lexsort((np.arange(n), exact, comp))
    c, e = comp[order], exact[order]
    new = np.ones(n, bool)
    new[1:] = (c[1:] != c[:-1]) | (e[1:] != e[:-1])
    first_sorted = order[np.flatnonzero(new)][np.cumsum(new) - 1]
    out = np.empty(n, np.int64)
    out[order] = first_sorted
    return out


@numba.njit(cache=True)
def _similarity(i, k, use_sig, sig, off, vals):
    return _signature_estimate(sig, i, k) if use_sig else _jaccard_sorted(off, vals, i, k)


@numba.njit(cache=True)
def _keeper_verify(starts, first, set_of, use_sig, sig, off, vals, t, max_component, max_compare, pinned,
                   partner, sim, exact_dup, capped):
    kept = np.empty(max(1, int(np.max(starts[1:] - starts[:-1])) if len(starts) > 1 else 1), np.int64)
    for c in range(len(starts) - 1):
        a, b = starts[c], starts[c + 1]
        big = b - a > max_component
        nk = 0
        for i in range(a, b):
            if pinned[i]:  # an indexed document: always kept
                kept[nk] = i
                nk += 1
                continue
            f = first[i]
            if f != i:  # the same normalised text as an earlier member: the same decision
                if partner[f] < 0:
                    partner[i], sim[i], exact_dup[i] = f, 1.0, True
                else:
                    partner[i], sim[i], exact_dup[i] = partner[f], sim[f], exact_dup[f]
                continue
            best, p = -1.0, -1
            si = set_of[i]
            if si >= 0:
                limit = nk
                if big and nk > max_compare:
                    limit = max_compare
                    capped[i] = True
                for x in range(limit):
                    k = kept[x]
                    sk = set_of[k]
                    if sk < 0:
                        continue
                    s = _similarity(si, sk, use_sig, sig, off, vals)
                    if s >= t and s > best:
                        best, p = s, k
            if p >= 0:
                partner[i], sim[i] = p, best
            else:
                kept[nk] = i
                nk += 1


def keeper_verified(comp_starts: np.ndarray, exact: np.ndarray, set_of: np.ndarray, sig: np.ndarray,
                    offsets: np.ndarray, values: np.ndarray, threshold: float, *, use_signature: bool = False,
                    max_component: int = 1000, max_compare: int = 64,
                    pinned: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Keeper-verified removal over members already in keeper order, grouped by component
    (``comp_starts``): visit each component's members in that order; a member is removed only
    if its similarity with a member already kept is >= ``threshold`` (its partner: the most
    similar such member, the earlier one on ties), else it is kept and starts its own group. A
    member with the normalised text of an earlier member shares that member's fate (an exact
    duplicate of it if it was kept). Similarity: exact Jaccard of the shingle sets
    ``values[offsets[s]:offsets[s + 1]]`` (``s = set_of[i]``, -1 for none: such a member is
    never removed by similarity), or the signature estimate (rows ``sig[s]``). In components of
    more than ``max_component`` members each member is compared with the first ``max_compare``
    kept members only (``capped``). ``pinned`` members (indexed documents, first in keeper order)
    are always kept.

    Returns per member: ``partner`` (index of the kept member it duplicates, -1 if kept),
    ``sim``, ``exact`` (same normalised text as the partner), ``capped``."""
    n = len(exact)
    partner = np.full(n, -1, np.int64)
    sim = np.full(n, np.nan)
    exact_dup = np.zeros(n, np.bool_)
    capped = np.zeros(n, np.bool_)
    if n:
        first = exact_firsts(comp_starts, exact)
        sig = np.ascontiguousarray(sig) if sig is not None and sig.size else np.zeros((1, 1), np.uint32)
        _keeper_verify(comp_starts.astype(np.int64), first, set_of.astype(np.int64), use_signature, sig,
                       offsets.astype(np.int64), values, float(threshold), int(max_component), int(max_compare),
                       np.zeros(n, np.bool_) if pinned is None else pinned.astype(np.bool_), partner, sim, exact_dup, capped)
    return {"partner": partner, "sim": sim, "exact": exact_dup, "capped": capped}


@numba.njit(cache=True)
def _all_pairs(members, set_of, off, vals, out):
    p = 0
    for x in range(len(members)):
        for y in range(x + 1, len(members)):
            i, k = set_of[members[x]], set_of[members[y]]
            out[p] = _similarity(i, k, False, np.zeros((1, 1), np.uint32), off, vals) if i >= 0 and k >= 0 else np.nan
            p += 1


def all_pair_jaccards(members: np.ndarray, set_of: np.ndarray, offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Exact Jaccard of every pair of ``members`` (NaN where a member has no shingle set)."""
    m = len(members)
    out = np.full(m * (m - 1) // 2, np.nan)
    if m > 1:
        _all_pairs(members.astype(np.int64), set_of.astype(np.int64), offsets.astype(np.int64), values, out)
    return out
