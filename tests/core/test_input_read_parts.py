"""``input_budget.read_parts``: a region read in Z slabs of whole chunks, stoppable between."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from conftest import drain
from napari_anystar.model.input_budget import InputReadError, read_parts

IMAGE = np.arange(10 * 6 * 8, dtype=np.float32).reshape(10, 6, 8)
PLANE = 6 * 8 * 4  # bytes of one float32 plane


def _recording(chunks) -> tuple[da.Array, list[tuple]]:
    """IMAGE as a dask array that records the location ((z0, z1), (y0, y1), (x0, x1)) of
    every chunk computed."""
    reads: list[tuple] = []

    def record(block: np.ndarray, block_info=None) -> np.ndarray:
        if block_info:
            reads.append(tuple(map(tuple, block_info[0]["array-location"])))
        return block

    return da.from_array(IMAGE, chunks=chunks).map_blocks(record, meta=IMAGE[:0]), reads


@pytest.mark.parametrize(("chunks", "part_bytes", "index", "slabs"), [
    ((3, 6, 8), 1, (slice(1, 9), slice(0, 6), slice(2, 7)), 3),  # cut at chunk edges 3, 6
    ((3, 6, 8), 4 * PLANE, (slice(0, 10), slice(0, 6), slice(0, 8)), 2),  # 0-6, 6-10
    ((10, 6, 8), 1, (slice(2, 8), slice(1, 3), slice(0, 8)), 1),  # one chunk: one slab
    ((2, 3, 4), 10**9, (slice(0, 10), slice(0, 6), slice(0, 8)), 1),  # all fits one part
])
def test_slabs_follow_chunk_edges_and_the_result_is_the_region(chunks, part_bytes, index,
                                                               slabs):
    lazy, reads = _recording(chunks)
    with dask.config.set(scheduler="synchronous"):
        progress, read = drain(read_parts(lazy, index, "'x'", part_bytes=part_bytes))
    assert progress == [(k, slabs) for k in range(1, slabs + 1)]
    assert type(read) is np.ndarray and read.dtype == np.float32
    np.testing.assert_array_equal(read, IMAGE[index])
    z0, z1 = index[0].start, index[0].stop
    computed = sorted(reads)
    assert len(computed) == len(set(computed))  # no chunk read twice ...
    assert all(z[0] < z1 and z[1] > z0 for z, _, _ in computed)  # ... nor outside the region


def test_numpy_arrays_are_cut_by_bytes_and_leading_axes_are_indexed():
    series = np.stack([IMAGE, IMAGE + 1])
    progress, read = drain(read_parts(series, (1, slice(0, 10), slice(0, 6), slice(0, 8)),
                                      "'x'", part_bytes=3 * PLANE))
    assert progress == [(k, 4) for k in range(1, 5)]  # 3 + 3 + 3 + 1 planes
    np.testing.assert_array_equal(read, IMAGE + 1)


def test_closing_between_slabs_stops_the_read():
    lazy, reads = _recording((2, 6, 8))
    with dask.config.set(scheduler="synchronous"):
        parts = read_parts(lazy, (slice(0, 10), slice(0, 6), slice(0, 8)), "'x'", part_bytes=1)
        assert next(parts) == (1, 5)
        parts.close()
    assert reads == [((0, 2), (0, 6), (0, 8))]


def test_a_failing_slab_is_one_line_naming_the_whole_read():
    def fail(block: np.ndarray, block_info=None) -> np.ndarray:
        if block_info and block_info[0]["array-location"][0][0] >= 4:
            raise OSError("[Errno 5] Input/output error")
        return block

    lazy = da.from_array(IMAGE, chunks=(2, 6, 8)).map_blocks(fail, meta=IMAGE[:0])
    parts = read_parts(lazy, (slice(0, 10), slice(0, 6), slice(0, 8)), "'big'", part_bytes=1)
    with dask.config.set(scheduler="synchronous"), pytest.raises(InputReadError) as info:
        drain(parts)
    assert str(info.value) == "Could not read 'big': OSError: [Errno 5] Input/output error."
