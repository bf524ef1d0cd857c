import os

import numpy as np
from PIL import Image

from lesionssl.data.store import build_store, cache_root


def _write(path, colour):
    Image.new("RGB", (24, 16), colour).save(path)


def test_store_is_built_once_reused_and_rebuilt_when_an_image_changes(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        _write(path, (i * 50, 0, 0))
    first = build_store([str(p) for p in paths], 8)
    assert first.shape == (3, 8, 8, 3) and first[1, 4, 4, 0] == 50
    stores = set(cache_root().glob("images-*.npy"))
    again = build_store([str(p) for p in paths], 8)
    assert set(cache_root().glob("images-*.npy")) == stores and np.array_equal(first, again)

    _write(paths[1], (200, 0, 0))
    os.utime(paths[1], ns=(1, 10**18))  # a different modification time
    changed = build_store([str(p) for p in paths], 8)
    assert changed[1, 4, 4, 0] == 200 and len(set(cache_root().glob("images-*.npy"))) == len(stores) + 1
    assert not list(cache_root().glob("*.partial"))
