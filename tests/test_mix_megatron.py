"""Megatron-format token shards (.bin + .idx, MMIDIDX) read back by megatron-core's own reader."""

import numpy as np
import pytest
from siftmix.mixing.mix import megatron_dtype, megatron_index, read_megatron_index

IndexedDataset = pytest.importorskip("megatron.core.datasets.indexed_dataset").IndexedDataset


def _write(prefix, docs, dtype):
    ids = np.concatenate(docs).astype(dtype) if docs else np.zeros(0, dtype)
    ids.tofile(str(prefix) + ".bin")
    with open(str(prefix) + ".idx", "wb") as fh:
        fh.write(megatron_index(np.array([len(d) for d in docs], np.int64), dtype))


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_megatron_reads_every_document(tmp_path, dtype):
    rng = np.random.default_rng(3)
    hi = 50257 if dtype == np.uint16 else 200_000
    docs = [rng.integers(0, hi, size=n) for n in (1, 7, 0, 300, 2, 4097)]
    _write(tmp_path / "s", docs, dtype)
    ds = IndexedDataset(str(tmp_path / "s"), mmap=True)
    assert len(ds) == len(docs) and ds.index.dtype == dtype
    assert list(ds.document_indices) == list(range(len(docs) + 1))
    for i, d in enumerate(docs):
        assert ds[i].tolist() == d.tolist()
        if len(d) >= 3:  # a window inside the document (Megatron does not bound-check it)
            assert ds.get(i, offset=1, length=2).tolist() == d[1:3].tolist()
    ours = read_megatron_index((tmp_path / "s.idx").read_bytes())
    assert ours["dtype"] == np.dtype(dtype) and ours["lengths"].tolist() == [len(d) for d in docs]
    assert ours["pointers"].tolist() == ds.index.sequence_pointers.tolist()


def test_megatron_dtype_and_refusals():
    assert megatron_dtype(50257) == np.uint16 and megatron_dtype(65536) == np.uint16
    assert megatron_dtype(128_256) == np.int32  # the format has no uint32
    with pytest.raises(ValueError, match="no dtype"):
        megatron_index(np.array([1]), np.uint32)
    with pytest.raises(ValueError, match="MMIDIDX"):
        read_megatron_index(b"NOTIDX" + bytes(40))
