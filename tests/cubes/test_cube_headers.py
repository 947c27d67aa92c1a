"""read_cube_header: read_cube's metadata and metadata errors, without reading a pixel."""

import h5py
import numpy as np
import pytest
from corpus import READABLE_BY_READER, write_broken_files, write_geotiff_cube, write_hdf5_cube, write_npy_cube
from PIL import Image

from spectral_training.cubes.readers import CubeFileError, read_cube, read_cube_header

# Broken-corpus files whose problem is in the pixels alone: the header reads fine.
BROKEN_IN_PIXELS_ONLY = {"corrupt.tif"}


def assert_same_header(path, **kwargs):
    header = read_cube_header(path, **kwargs)
    assert header == read_cube(path, **kwargs).header
    return header


# ---- the same metadata as read_cube, per format ----------------------------------------------


@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_hdf5_header_matches_read_cube(tmp_path, layout):
    written = write_hdf5_cube(tmp_path / "a.h5", (4, 8, 6), layout=layout, dtype="uint16", with_labels=True,
                              wavelengths=[0.45, 0.55, 0.65, 0.85], band_names=["b", "g", "r", "nir"])
    header = assert_same_header(written.path)
    assert header.shape == (4, 8, 6) and header.has_label_map and header.source_layout == layout
    assert header.wavelengths_nm == pytest.approx([450, 550, 650, 850]) and header.source_dtype == "uint16"


def test_hdf5_header_honours_cube_key_layout_attribute_and_forced_layout(tmp_path):
    write_hdf5_cube(tmp_path / "a.h5", (5, 7, 9), layout="CHW", cube_key="scene/radiance", layout_attribute=True)
    assert assert_same_header(tmp_path / "a.h5", cube_key="scene/radiance").shape == (5, 7, 9)
    assert assert_same_header(tmp_path / "a.h5", layout="HWC", labels_key="").shape == (9, 5, 7)


def test_npy_header_matches_read_cube(tmp_path):
    write_npy_cube(tmp_path / "a.npy", (3, 8, 8), layout="HWC", dtype="int16")
    header = assert_same_header(tmp_path / "a.npy", scale=0.5)
    assert (header.shape, header.source_layout, header.has_label_map) == ((3, 8, 8), "HWC", False)


def test_geotiff_header_matches_read_cube(tmp_path):
    write_geotiff_cube(tmp_path / "a.tif", (3, 8, 5), band_names=["b", "", "r"], wavelengths=[450, 550, 650],
                       wavelength_units="nm")
    header = assert_same_header(tmp_path / "a.tif")
    assert header.shape == (3, 8, 5) and header.band_names == ["b", "band_2", "r"]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("photo_size", [None, 4])
def test_photo_header_matches_read_cube(tmp_path, suffix, photo_size):
    Image.fromarray(np.full((6, 10, 3), 90, np.uint8)).save(tmp_path / f"a{suffix}")
    header = assert_same_header(tmp_path / f"a{suffix}", photo_size=photo_size)
    assert header.shape == ((3, 6, 10) if photo_size is None else (3, 4, 4))


def test_sixteen_bit_photo_header_gives_its_sample_type(tmp_path):
    Image.fromarray(np.full((5, 5), 40000, np.uint16)).save(tmp_path / "grey16.png")
    assert assert_same_header(tmp_path / "grey16.png", photo_size=4).source_dtype == "uint16"


# ---- the same metadata errors, and no pixel read ---------------------------------------------


def test_every_broken_file_read_cube_refuses_is_refused_alike_unless_only_its_pixels_are_broken(tmp_path):
    expected = write_broken_files(tmp_path)
    for name in expected:
        try:
            read_cube(tmp_path / name)
        except CubeFileError as err:
            want = err
        else:
            want = None
        try:
            read_cube_header(tmp_path / name)
        except CubeFileError as err:
            assert want is not None, f"{name}: the header reader refuses what read_cube reads"
            assert (err.path, err.reason, err.fix) == (want.path, want.reason, want.fix), name
        else:
            assert want is None or name in BROKEN_IN_PIXELS_ONLY, f"{name}: {want}"
    assert READABLE_BY_READER.isdisjoint(BROKEN_IN_PIXELS_ONLY)


@pytest.mark.parametrize("labels, readable_header", [
    (np.full((8, 8), 1.5), True),  # fractional labels: only the values say so
    (np.full((8, 8), -1, np.int8), True),  # negative labels: the values again
    (np.full((8, 8), b"x"), False),  # strings: the dtype says so
])
def test_label_maps_are_checked_by_dtype_in_the_header_and_by_value_when_read(tmp_path, labels, readable_header):
    write_hdf5_cube(tmp_path / "a.h5", (4, 8, 8))
    with h5py.File(tmp_path / "a.h5", "a") as f:
        f["labels"] = labels
    with pytest.raises(CubeFileError, match="labels") as from_pixels:
        read_cube(tmp_path / "a.h5")
    if readable_header:
        assert read_cube_header(tmp_path / "a.h5").has_label_map
    else:
        with pytest.raises(CubeFileError) as from_header:
            read_cube_header(tmp_path / "a.h5")
        assert from_header.value.reason == from_pixels.value.reason


def test_invalid_parameters_are_refused_alike(tmp_path):
    write_npy_cube(tmp_path / "a.npy")
    for kwargs in ({"scale": 0}, {"layout": "BHW"}, {"photo_size": 0}):
        with pytest.raises(CubeFileError) as from_pixels:
            read_cube(tmp_path / "a.npy", **kwargs)
        with pytest.raises(CubeFileError) as from_header:
            read_cube_header(tmp_path / "a.npy", **kwargs)
        assert from_header.value.reason == from_pixels.value.reason


def test_hdf5_header_does_not_read_damaged_chunks(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("cube", data=np.ones((4, 8, 8), np.float32), chunks=(1, 8, 8), compression="gzip")
        f["wavelengths"] = [450.0, 550.0, 650.0, 850.0]
        chunk = f["cube"].id.get_chunk_info(2)
    with open(tmp_path / "a.h5", "r+b") as raw:  # the third band's compressed bytes become garbage
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)
    header = read_cube_header(tmp_path / "a.h5")
    assert header.shape == (4, 8, 8) and header.wavelengths_nm == [450.0, 550.0, 650.0, 850.0]
    with pytest.raises(CubeFileError, match="corrupt"):  # only a pixel read finds them
        read_cube(tmp_path / "a.h5")


def test_photo_header_does_not_decode_the_pixels(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg", quality=90)  # the header is a small part of it
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert read_cube_header(tmp_path / "cut.jpg", photo_size=8).shape == (3, 8, 8)
    with pytest.raises(CubeFileError, match="truncated or corrupt"):
        read_cube(tmp_path / "cut.jpg", photo_size=8)
