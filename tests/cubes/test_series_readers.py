"""Reading one series file: layouts, dates sorted and repeated, masks from a mask or a QA band."""

import h5py
import numpy as np
import pytest
from series_corpus import write_series

from spectral_training.cubes.readers import CubeFileError
from spectral_training.cubes.series_readers import QAMapping, read_series


def test_a_thwc_series_reads_as_tchw_with_day_of_year(tmp_path):
    values = write_series(tmp_path / "a.h5", layout="THWC")
    raw = read_series(tmp_path / "a.h5")
    assert raw.data.shape == (3, 3, 8, 8) and np.array_equal(raw.data, values)
    assert raw.day_of_year.tolist() == [60, 152, 244] and raw.valid.all()


def test_dates_out_of_order_are_sorted_with_their_images(tmp_path):
    values = write_series(tmp_path / "a.h5", dates=["2021-09-01", "2021-03-01", "2021-06-01"])
    raw = read_series(tmp_path / "a.h5")
    assert raw.sorted_dates and raw.dates == ["2021-03-01", "2021-06-01", "2021-09-01"]
    assert np.array_equal(raw.data, values[[1, 2, 0]])


def test_a_repeated_date_keeps_its_first_image_and_is_reported(tmp_path):
    values = write_series(tmp_path / "a.h5", dates=["2021-03-01", "2021-06-01", "2021-03-01"])
    raw = read_series(tmp_path / "a.h5")
    assert raw.duplicate_dates == ["2021-03-01"] and raw.day_of_year.tolist() == [60, 152]
    assert np.array_equal(raw.data, values[[0, 1]])


def test_a_series_into_the_next_year_keeps_counting_days(tmp_path):
    write_series(tmp_path / "a.h5", dates=["2021-12-27", "2022-01-06"])
    assert read_series(tmp_path / "a.h5").day_of_year.tolist() == [361, 371]


def test_cfmask_qa_values_map_to_the_right_validity(tmp_path):
    qa = np.zeros((3, 8, 8), np.uint8)
    qa[0, 0, :6] = [0, 1, 2, 3, 4, 255]  # clear land, clear water, shadow, snow, cloud, fill
    write_series(tmp_path / "a.h5", qa=qa)
    raw = read_series(tmp_path / "a.h5", qa=QAMapping())
    assert raw.valid[0, 0, :6].tolist() == [True, True, False, False, False, False]
    assert raw.valid.sum() == 3 * 64 - 4


def test_a_qa_value_outside_the_mapping_rejects_the_file_naming_it(tmp_path):
    qa = np.zeros((3, 8, 8), np.uint8)
    qa[1, 2, 2] = 7
    write_series(tmp_path / "a.h5", qa=qa)
    with pytest.raises(CubeFileError, match=r"\[7\].*ingestion.series.qa"):
        read_series(tmp_path / "a.h5", qa=QAMapping())


def test_a_mask_and_non_finite_values_make_pixels_invalid_and_zero(tmp_path):
    valid = np.ones((3, 8, 8), bool)
    valid[2, 1, 1] = False
    write_series(tmp_path / "a.h5", valid=valid)
    with h5py.File(tmp_path / "a.h5", "r+") as f:
        f["series"][0, 1, 3, 3] = np.nan
    raw = read_series(tmp_path / "a.h5")
    assert not raw.valid[2, 1, 1] and not raw.valid[0, 3, 3] and raw.valid.sum() == 3 * 64 - 2
    assert raw.data[0, 1, 3, 3] == 0.0 and np.isfinite(raw.data).all()


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: p.write_bytes(b"not hdf5 at all"), "not an HDF5 file"),
    (lambda p: write_series(p, dates=[1, 2, 3], dates_key="nothing"), "no acquisition dates"),
    (lambda p: write_series(p, dates=["2021-03-01", "2021-13-40", "2021-06-01"]), "not ISO dates"),
    (lambda p: h5py.File(p, "w").create_dataset("cube", data=np.zeros((3, 8, 8))).file.close(), "no 4-D"),
    (lambda p: write_series(p, valid=np.ones((2, 8, 8), bool)), r"'valid' has shape \(2, 8, 8\)"),
])
def test_bad_series_files_are_refused_with_a_reason_and_a_fix(tmp_path, make, reason):
    path = tmp_path / "bad.h5"
    make(path)
    before = path.read_bytes()
    with pytest.raises(CubeFileError, match=reason) as err:
        read_series(path)
    assert err.value.fix and path.read_bytes() == before  # raw files are never modified
