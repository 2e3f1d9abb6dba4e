"""Memory budget, input classification, region fitting and region reads (no napari)."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from napari_anystar.model import input_budget
from napari_anystar.model.input_budget import (
    BUDGET_ENV,
    BUDGET_FRACTION,
    InputReadError,
    Region,
    classify,
    fit_region,
    format_bytes,
    memory_budget,
    read_region,
)


# -------------------------------------------------------------------------- budget
def test_budget_defaults_to_a_fraction_of_available_memory(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    monkeypatch.setattr(input_budget, "available_memory", lambda: 16 * 10**9)
    assert memory_budget() == int(BUDGET_FRACTION * 16 * 10**9) == 4 * 10**9


def test_available_memory_without_psutil_uses_sysconf(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(input_budget.os, "sysconf", pages.__getitem__)
    assert input_budget.available_memory() == 4_096_000


def test_budget_from_environment_and_argument(monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "2.5")
    assert memory_budget() == 2_500_000_000
    assert memory_budget(0.001) == 1_000_000  # the argument wins


@pytest.mark.parametrize(("text", "argument", "message"), [
    ("lots", None, f"{BUDGET_ENV}='lots' must be a positive number of GB."),
    ("-1", None, f"{BUDGET_ENV}='-1' must be a positive number of GB."),
    ("nan", None, f"{BUDGET_ENV}='nan' must be a positive number of GB."),
    ("", 0.0, "the memory budget must be a positive number of GB."),
])
def test_bad_budget_is_one_line(monkeypatch, text, argument, message):
    monkeypatch.setenv(BUDGET_ENV, text)
    with pytest.raises(ValueError) as info:
        memory_budget(argument)
    assert str(info.value) == message


def test_format_bytes():
    assert [format_bytes(n) for n in (512 * 2048 * 2048 * 2, 294_912, 2_500_000, 12)] == [
        "4.29 GB", "295 kB", "2.5 MB", "12 bytes"]


# ---------------------------------------------------------------------- classify
def test_classify_memory_lazy_and_over_budget(tmp_path):
    image = np.zeros((4, 8, 8), np.uint16)  # 512 bytes
    assert classify(image, 512) == input_budget.InputSize("memory", 512, 512)
    assert classify(image, 511).kind == "over_budget"
    assert classify(da.from_array(image), 10**6).kind == "lazy"
    mapped = np.memmap(tmp_path / "m.raw", dtype=np.uint16, mode="w+", shape=(4, 8, 8))
    assert classify(mapped, 10**6).kind == "lazy"  # disk-backed: read on access
    series = np.zeros((10, 4, 8, 8), np.float32)  # one frame: 1 kB, all frames: 10 kB
    assert classify(series, 1024, series.shape[1:]) == input_budget.InputSize(
        "memory", 1024, 1024)
    size = classify(da.zeros((512, 2048, 2048), dtype=np.uint16), 2 * 10**9)
    assert size.kind == "over_budget"  # over the budget outranks lazy
    assert size.describe("big") == "'big' is 4.29 GB, over the memory budget (2 GB)"
    assert classify(da.from_array(image), 10**6).describe("big") == (
        "'big' is a lazy 512 bytes layer")
    assert classify(image, 10**6).describe("big") == ""


# ---------------------------------------------------------------------- regions
def test_region_within_budget_keeps_the_view_and_all_z():
    region = fit_region((64, 100, 100), 2, 10**6, view=((10, 50), (-20, 30)), z=5)
    assert region == Region((0, 10, 0), (64, 50, 30))  # view clipped to the image
    assert region.shape == (64, 40, 30) and region.describe() == "z 0-63, y 10-49, x 0-29"
    assert region.slices == (slice(0, 64), slice(10, 50), slice(0, 30))
    assert not region.covers((64, 100, 100)) and fit_region((4, 5, 6), 1, 120).covers((4, 5, 6))


def test_region_over_budget_is_a_z_slab_around_the_displayed_slice():
    # 512 x 2048 x 2048 uint16 (4.3 GB); view 512 x 512; budget 0.1 GB -> 190 slices
    region = fit_region((512, 2048, 2048), 2, 10**8, view=((800, 1312), (900, 1412)), z=400)
    assert region.shape == (190, 512, 512)
    assert region.start[1:] == (800, 900)
    assert region.start[0] <= 400 < region.stop[0]
    assert abs((region.start[0] + region.stop[0]) / 2 - 400.5) <= 1  # centred on the slice
    assert np.prod(region.shape) * 2 <= 10**8
    top = fit_region((512, 2048, 2048), 2, 10**8, view=((800, 1312), (900, 1412)), z=510)
    assert top.stop[0] == 512 and top.shape[0] == 190  # kept inside the volume


def test_region_narrows_the_view_when_few_slices_fit():
    # a 16-slice slab of the whole 2048 x 2048 view would need 134 MB; budget 10 MB
    region = fit_region((512, 2048, 2048), 2, 10**7, z=0)
    assert region.shape[0] == input_budget.MIN_REGION_EDGE == 16
    assert region.shape[1] == region.shape[2] == 559  # sqrt(1e7 / (16 * 2)) voxels
    assert np.prod(region.shape) * 2 <= 10**7
    centre = np.add(region.start[1:], 559 / 2)
    assert np.all(np.abs(centre - 1024) <= 1)  # centred on the view


def test_region_of_a_small_view_is_at_least_min_edge_wide():
    region = fit_region((64, 100, 100), 1, 10**6, view=((50, 52), (0, 1)), z=0)
    assert region.shape == (64, 16, 16) and region.start[1:] == (43, 0)


def test_region_refused_when_nothing_fits():
    with pytest.raises(ValueError, match=r"^The memory budget \(1 kB\) is too small for a "
                                         rf"region of 16 x 16 x 16 voxels: raise {BUDGET_ENV}"):
        fit_region((64, 64, 64), 1, 1000)
    with pytest.raises(ValueError, match=r"^The image is not in view"):
        fit_region((64, 64, 64), 1, 10**6, view=((100, 200), (0, 64)))


# -------------------------------------------------------------------------- reads
def test_read_region_reads_only_the_region():
    image = np.arange(4 * 6 * 8).reshape(4, 6, 8)
    lazy = da.from_array(image, chunks=(1, 6, 8))
    region = Region((1, 2, 3), (3, 5, 8))
    read = read_region(lazy, region.slices, "'x'")
    assert type(read) is np.ndarray
    np.testing.assert_array_equal(read, image[1:3, 2:5, 3:8])
    np.testing.assert_array_equal(read_region(lazy, (2, *region.slices[1:]), "'x'"),
                                  image[2, 2:5, 3:8])


@pytest.mark.parametrize(("error", "message"), [
    (MemoryError("Unable to allocate 4.00 GiB"),
     f"Could not read 'big' (z 0-3): MemoryError: Unable to allocate 4.00 GiB. Zoom in or "
     f"lower {BUDGET_ENV} to read less."),
    (OSError("[Errno 5] Input/output error\nmore detail"),
     "Could not read 'big' (z 0-3): OSError: [Errno 5] Input/output error."),
    (KeyError(), "Could not read 'big' (z 0-3): KeyError."),
])
def test_read_errors_become_one_line(error, message):
    def fail():
        raise error

    lazy = da.from_delayed(dask.delayed(fail)(), shape=(4, 6, 8), dtype=np.float32)
    with pytest.raises(InputReadError) as info:
        read_region(lazy, (slice(0, 4),), "'big' (z 0-3)")
    assert str(info.value) == message and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
