"""Tests for spectral_training.cubes.readers: one behaviour per test, tiny real files in tmp_path."""

import pickle

import h5py
import numpy as np
import pytest
from corpus import (
    READABLE_BY_READER,
    make_values,
    write_broken_files,
    write_geotiff_cube,
    write_hdf5_cube,
    write_npy_cube,
)

from spectral_training.cubes.readers import (
    SUPPORTED_SUFFIXES,
    CubeFileError,
    RawCube,
    detect_band_axis,
    read_cube,
)


def assert_cube_contract(cube: RawCube, shape: tuple[int, int, int]) -> None:
    assert cube.data.shape == shape
    assert cube.data.dtype == np.float32
    assert cube.data.flags.c_contiguous


# ---- each format reads to float32 (C, H, W) ------------------------------------------------


@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_hdf5_reads_either_layout_as_chw_float32(tmp_path, layout):
    written = write_hdf5_cube(tmp_path / "scene.h5", (4, 8, 8), layout=layout)
    cube = read_cube(written.path)
    assert_cube_contract(cube, (4, 8, 8))
    np.testing.assert_array_equal(cube.data, written.data)
    assert cube.source_layout == layout
    assert cube.source_dtype == "float32"


@pytest.mark.parametrize("layout", ["HWC", "CHW"])
def test_npy_reads_either_layout_as_chw_float32(tmp_path, layout):
    written = write_npy_cube(tmp_path / "scene.npy", (4, 8, 8), layout=layout)
    cube = read_cube(written.path)
    assert_cube_contract(cube, (4, 8, 8))
    np.testing.assert_array_equal(cube.data, written.data)
    assert cube.source_layout == layout
    assert cube.label_map is None and cube.wavelengths_nm is None


def test_geotiff_reads_bands_as_chw_with_nodata_as_nan(tmp_path):
    written = write_geotiff_cube(tmp_path / "scene.tif", (3, 8, 6), dtype="uint16", nodata=0)
    cube = read_cube(written.path)
    assert_cube_contract(cube, (3, 8, 6))
    assert np.all(np.isnan(cube.data[:, 0, 0]))
    np.testing.assert_array_equal(cube.data, written.data)  # NaN positions compare equal
    assert cube.source_layout == "CHW"
    assert cube.source_dtype == "uint16"


def test_geotiff_band_descriptions_become_band_names(tmp_path):
    written = write_geotiff_cube(tmp_path / "scene.tif", (3, 4, 4), band_names=["blue", "green", "red"])
    assert read_cube(written.path).band_names == ["blue", "green", "red"]


def test_geotiff_wavelength_tags_with_unit_become_nanometres(tmp_path):
    written = write_geotiff_cube(
        tmp_path / "scene.tif", (3, 4, 4), wavelengths=[0.49, 0.56, 0.665], wavelength_units="micrometers"
    )
    assert read_cube(written.path).wavelengths_nm == pytest.approx([490.0, 560.0, 665.0])


def test_geotiff_single_band_is_one_channel(tmp_path):
    written = write_geotiff_cube(tmp_path / "dem.tiff", (1, 5, 7), dtype="float32", nodata=None)
    cube = read_cube(written.path)
    assert_cube_contract(cube, (1, 5, 7))
    np.testing.assert_array_equal(cube.data, written.data)


def test_suffix_is_matched_case_insensitively(tmp_path):
    written = write_npy_cube(tmp_path / "scene.npy")
    upper = written.path.rename(tmp_path / "SCENE.NPY")  # np.save would append ".npy" itself
    assert read_cube(upper).data.shape == (4, 8, 8)


# ---- dtypes and scaling ---------------------------------------------------------------------


def test_integer_data_is_cast_to_float32_unscaled_by_default(tmp_path):
    written = write_hdf5_cube(tmp_path / "dn.h5", dtype="uint16")
    cube = read_cube(written.path)
    assert cube.data.dtype == np.float32 and cube.source_dtype == "uint16"
    np.testing.assert_array_equal(cube.data, written.data)


def test_integer_data_is_multiplied_by_scale(tmp_path):
    written = write_hdf5_cube(tmp_path / "dn.h5", dtype="uint16")
    cube = read_cube(written.path, scale=0.0001)
    np.testing.assert_allclose(cube.data, written.data * np.float32(0.0001), rtol=1e-6)


def test_float_data_is_not_scaled(tmp_path):
    written = write_npy_cube(tmp_path / "reflectance.npy", dtype="float32")
    np.testing.assert_array_equal(read_cube(written.path, scale=0.0001).data, written.data)


def test_float64_becomes_float32(tmp_path):
    written = write_npy_cube(tmp_path / "double.npy", dtype="float64")
    cube = read_cube(written.path)
    assert cube.data.dtype == np.float32 and cube.source_dtype == "float64"
    np.testing.assert_array_equal(cube.data, written.data)


def test_chunked_hdf5_hwc_reads_in_slabs_correctly(tmp_path, monkeypatch):
    # A tiny slab size forces many slabs, so slab edges are exercised on an 8x8 image.
    monkeypatch.setattr("spectral_training.cubes.readers._SLAB_BYTES", 1)
    written = write_hdf5_cube(tmp_path / "chunked.h5", (5, 9, 9), dtype="int16", chunks=(2, 9, 5))
    np.testing.assert_array_equal(read_cube(written.path).data, written.data)


def test_complex_data_is_refused(tmp_path):
    path = tmp_path / "complex.npy"
    np.save(path, np.ones((4, 8, 8), dtype=np.complex64))
    with pytest.raises(CubeFileError, match="complex64"):
        read_cube(path)


def test_invalid_scale_is_refused(tmp_path):
    written = write_npy_cube(tmp_path / "scene.npy")
    with pytest.raises(CubeFileError, match="scale"):
        read_cube(written.path, scale=0)


# ---- layout detection -----------------------------------------------------------------------


def test_indian_pines_shape_is_detected_as_hwc():
    assert detect_band_axis((145, 145, 200)) == "HWC"


def test_square_image_file_is_detected_as_hwc(tmp_path):
    written = write_npy_cube(tmp_path / "pines_like.npy", (20, 9, 9), layout="HWC", dtype="uint8")
    cube = read_cube(written.path)
    assert cube.source_layout == "HWC"
    assert cube.data.shape == (20, 9, 9)


@pytest.mark.parametrize(
    ("shape", "n_wavelengths", "expected"),
    [
        ((200, 145, 145), None, "CHW"),  # square image, bands first
        ((145, 145, 200), None, "HWC"),  # square image, bands last
        ((10, 20, 30), None, "CHW"),  # axis 0 strictly smallest
        ((30, 20, 10), None, "HWC"),  # axis 2 strictly smallest
        ((20, 10, 30), 30, "HWC"),  # wavelength count decides
        ((20, 10, 30), 20, "CHW"),
    ],
)
def test_detect_band_axis_rules(shape, n_wavelengths, expected):
    assert detect_band_axis(shape, n_wavelengths=n_wavelengths) == expected


@pytest.mark.parametrize("shape", [(20, 10, 30), (8, 8, 8), (10, 20, 10)])
def test_undecidable_shape_is_ambiguous_and_says_to_set_layout(shape):
    with pytest.raises(CubeFileError, match="ambiguous") as caught:
        detect_band_axis(shape, path="scene.npy")
    assert "layout: HWC" in caught.value.fix and "layout: CHW" in caught.value.fix


def test_forced_layout_overrides_detection(tmp_path):
    written = write_npy_cube(tmp_path / "scene.npy", (20, 10, 30), layout="CHW")
    cube = read_cube(written.path, layout="CHW")
    np.testing.assert_array_equal(cube.data, written.data)


def test_forced_layout_wins_over_shape_rules():
    assert detect_band_axis((145, 145, 200), layout="CHW") == "CHW"


def test_unknown_layout_value_is_refused():
    with pytest.raises(CubeFileError, match="'BHWC'"):
        detect_band_axis((4, 8, 8), layout="BHWC")


def test_hdf5_layout_attribute_is_honoured(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5", (20, 10, 30), layout="CHW", layout_attribute=True)
    cube = read_cube(written.path)
    assert cube.source_layout == "CHW"
    np.testing.assert_array_equal(cube.data, written.data)


def test_hdf5_wavelength_count_decides_layout(tmp_path):
    wavelengths = list(np.linspace(400, 1000, 30))
    written = write_hdf5_cube(tmp_path / "scene.h5", (30, 20, 10), layout="HWC", wavelengths=wavelengths)
    assert read_cube(written.path).source_layout == "HWC"


# ---- wavelengths, band names, labels --------------------------------------------------------


def test_wavelengths_from_dataset(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5", wavelengths=[450, 550, 650, 850])
    assert read_cube(written.path).wavelengths_nm == [450.0, 550.0, 650.0, 850.0]


def test_wavelengths_from_cube_attribute(tmp_path):
    written = write_hdf5_cube(
        tmp_path / "scene.h5", wavelengths=[450, 550, 650, 850], wavelengths_as="attribute"
    )
    assert read_cube(written.path).wavelengths_nm == [450.0, 550.0, 650.0, 850.0]


def test_wavelengths_in_micrometres_without_unit_are_converted(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5", wavelengths=[0.45, 0.55, 0.65, 0.85])
    assert read_cube(written.path).wavelengths_nm == pytest.approx([450.0, 550.0, 650.0, 850.0])


def test_explicit_nanometre_unit_prevents_conversion(tmp_path):
    # Far-fetched values, but an explicit unit must beat the < 100 guess.
    written = write_hdf5_cube(tmp_path / "scene.h5", wavelengths=[10, 20, 30, 40], wavelength_units="nm")
    assert read_cube(written.path).wavelengths_nm == [10.0, 20.0, 30.0, 40.0]


def test_wavelength_count_must_match_bands(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5", (4, 8, 8), wavelengths=[450, 550, 650])
    with pytest.raises(CubeFileError, match="3 wavelengths but the cube has 4 bands"):
        read_cube(written.path)


def test_band_names_from_attribute(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5", band_names=["b", "g", "r", "nir"])
    assert read_cube(written.path).band_names == ["b", "g", "r", "nir"]


def test_labels_are_read_as_int32(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5", (4, 8, 6), with_labels=True)
    cube = read_cube(written.path, layout="HWC")
    assert cube.label_map.dtype == np.int32
    np.testing.assert_array_equal(cube.label_map, written.labels)


def test_missing_labels_give_none(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5")
    assert read_cube(written.path).label_map is None


def test_labels_of_wrong_shape_name_both_shapes(tmp_path):
    folder = tmp_path / "broken"
    write_broken_files(folder)
    with pytest.raises(CubeFileError) as caught:
        read_cube(folder / "labels_mismatch.h5")
    assert "(9, 8)" in caught.value.reason and "(8, 8)" in caught.value.reason


def test_negative_labels_are_refused(tmp_path):
    path = tmp_path / "scene.h5"
    with h5py.File(path, "w") as h5:
        h5["cube"] = make_values((8, 8, 4))
        h5["labels"] = -np.ones((8, 8), dtype=np.int16)
    with pytest.raises(CubeFileError, match="0 \\(unlabelled\\)"):
        read_cube(path)


# ---- choosing the cube dataset --------------------------------------------------------------


def test_single_cube_is_found_inside_groups(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5", cube_key="scene/radiance")
    np.testing.assert_array_equal(read_cube(written.path).data, written.data)


def test_several_cubes_list_every_candidate(tmp_path):
    write_broken_files(tmp_path)
    with pytest.raises(CubeFileError, match="cube_key") as caught:
        read_cube(tmp_path / "two_cubes.h5")
    assert "/radiance" in caught.value.reason and "/reflectance" in caught.value.reason


def test_cube_key_picks_one_of_several(tmp_path):
    write_broken_files(tmp_path)
    cube = read_cube(tmp_path / "two_cubes.h5", cube_key="reflectance")
    np.testing.assert_array_equal(cube.data, make_values((8, 8, 4), seed=1).transpose(2, 0, 1))


def test_missing_cube_key_lists_existing_3d_datasets(tmp_path):
    written = write_hdf5_cube(tmp_path / "scene.h5", cube_key="radiance")
    with pytest.raises(CubeFileError, match="'/radiance'") as caught:
        read_cube(written.path, cube_key="reflectance")
    assert "'reflectance' does not exist" in caught.value.reason


# ---- broken files ---------------------------------------------------------------------------


def _broken_corpus(tmp_path):
    return write_broken_files(tmp_path / "raw")


def test_broken_corpus_covers_the_required_breakages(tmp_path):
    expected = _broken_corpus(tmp_path)
    required = {"truncated.h5", "not_hdf5.h5", "empty.h5", "two_d.h5", "zero_size.h5", "all_nan.h5",
                "wrong_bands.h5", "ambiguous.npy", "corrupt.tif"}  # fmt: skip
    assert required <= set(expected)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(expected)


def test_every_unreadable_file_gives_a_cube_file_error_naming_file_and_reason(tmp_path):
    expected = _broken_corpus(tmp_path)
    for name, reason in expected.items():
        if name in READABLE_BY_READER:
            continue
        with pytest.raises(CubeFileError) as caught:
            read_cube(tmp_path / "raw" / name)
        message = str(caught.value)
        assert name in message, message
        assert reason in caught.value.reason, f"{name}: {message}"
        assert caught.value.fix, f"{name} has no fix"
        assert message == f"{caught.value.path}: {caught.value.reason} Fix: {caught.value.fix}"


def test_files_left_for_ingestion_to_reject_read_fine(tmp_path):
    _broken_corpus(tmp_path)
    all_nan = read_cube(tmp_path / "raw" / "all_nan.h5")
    assert all_nan.data.shape == (4, 8, 8) and np.all(np.isnan(all_nan.data))
    assert read_cube(tmp_path / "raw" / "wrong_bands.h5").data.shape == (5, 8, 8)


def test_two_d_hdf5_says_a_cube_needs_three_dimensions(tmp_path):
    _broken_corpus(tmp_path)
    with pytest.raises(CubeFileError, match="needs 3 dimensions"):
        read_cube(tmp_path / "raw" / "two_d.h5")


def test_unsupported_suffix_is_refused(tmp_path):
    path = tmp_path / "scene.envi"
    path.write_bytes(b"ENVI")
    with pytest.raises(CubeFileError, match="not a supported cube format") as caught:
        read_cube(path)
    assert all(suffix in caught.value.reason for suffix in SUPPORTED_SUFFIXES)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CubeFileError, match="does not exist"):
        read_cube(tmp_path / "nowhere.h5")


def test_cube_file_error_survives_pickling():
    error = CubeFileError("a.h5", "it is broken.", "fix it.")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, copy.fix, str(copy)) == ("a.h5", "it is broken.", "fix it.", str(error))


def test_reading_never_changes_any_file(tmp_path):
    folder = tmp_path / "raw"
    write_broken_files(folder)
    write_hdf5_cube(folder / "good.h5", with_labels=True, wavelengths=[450, 550, 650, 850])
    write_npy_cube(folder / "good.npy")
    write_geotiff_cube(folder / "good.tif", band_names=["b", "g", "r", "nir"])
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    for name in before:
        try:
            read_cube(folder / name)
        except CubeFileError:
            pass
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    assert after == before  # same files, same bytes, same mtimes, no side files (.aux.xml)
