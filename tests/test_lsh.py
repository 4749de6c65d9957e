import numpy as np
import pytest
from datasketch.lsh import _optimal_param
from siftmix.dedup.lsh import band_keys, collision_probability, optimal_params


@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.5, 64), (0.9, 128), (0.7, 256)])
def test_optimal_params_equal_datasketch(threshold, num_perm):
    assert optimal_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_optimal_params_equal_datasketch_grid():
    """The fixed quadrature picks what datasketch's adaptive one picks, over a grid of settings."""
    for threshold in np.round(np.arange(0.1, 0.95, 0.1), 2):
        for num_perm in (32, 128):
            for w in (0.5, 0.1):
                got = optimal_params(float(threshold), num_perm, w, 1 - w)
                assert got == _optimal_param(float(threshold), num_perm, w, 1 - w), (threshold, num_perm, w)


def test_band_keys_equal_iff_bands_equal():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, (50, 128), dtype=np.uint64).astype(np.uint32)
    sig[1] = sig[0]
    sig[2, :13] = sig[0, :13]  # same first band only
    keys = band_keys(sig, 9, 13)
    assert (keys[0] == keys[1]).all()
    assert keys[2, 0] == keys[0, 0] and (keys[2, 1:] != keys[0, 1:]).all()
    assert len(np.unique(keys[3:, 0])) == 47
    with pytest.raises(ValueError):
        band_keys(sig, 20, 13)
    assert collision_probability(0.8, 9, 13) == pytest.approx(1 - (1 - 0.8**13) ** 9)
