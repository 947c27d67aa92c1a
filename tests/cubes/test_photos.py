"""PNG/JPEG photographs: orientation, modes, crop/resize, broken files, ingestion of class folders."""

import numpy as np
import pytest
from PIL import Image

from spectral_training.cubes.ingest import IngestionParams, ingest_folder
from spectral_training.cubes.photos import centre_square
from spectral_training.cubes.readers import CubeFileError, read_cube
from spectral_training.cubes.store import CubeStore

EXIF_ORIENTATION = 0x0112


def rgb_pattern(height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) whose red encodes the row and green the column, so a rotation is visible."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 20, cols * 20, np.full_like(rows, 7)], axis=2).astype(np.uint8)


def test_png_is_rgb_float32_in_unit_range_with_band_metadata(tmp_path):
    pixels = rgb_pattern(6, 6)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    cube = read_cube(tmp_path / "a.png")
    assert cube.data.dtype == np.float32 and cube.data.shape == (3, 6, 6)
    np.testing.assert_allclose(cube.data, pixels.transpose(2, 0, 1) / 255.0, atol=1e-7)
    assert cube.band_names == ["red", "green", "blue"]
    assert cube.wavelengths_nm == [640.0, 550.0, 465.0]
    assert (cube.source_layout, cube.source_dtype, cube.label_map) == ("HWC", "uint8", None)


def test_upper_case_jpeg_suffix_is_read(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tmp_path / "A.JPEG", quality=95)
    cube = read_cube(tmp_path / "A.JPEG")
    assert cube.data.shape == (3, 8, 8) and np.allclose(cube.data, 128 / 255, atol=2 / 255)


def test_exif_orientation_6_is_applied(tmp_path):
    # Stored 4 rows x 6 columns; orientation 6 means "rotate 90 degrees clockwise to display".
    pixels = rgb_pattern(4, 6)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = 6
    image.save(tmp_path / "phone.png", exif=exif)
    cube = read_cube(tmp_path / "phone.png")
    expected = np.rot90(pixels, k=-1)  # clockwise: (6, 4, 3), the stored bottom-left is now top-left
    assert cube.data.shape == (3, 6, 4)
    np.testing.assert_allclose(cube.data, expected.transpose(2, 0, 1) / 255.0, atol=1e-7)
    # The displayed top row is the stored first column read from the bottom up.
    assert cube.data[0, 0, 0] * 255 == pytest.approx(pixels[3, 0, 0])


def test_grayscale_png_is_copied_into_three_bands(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(grey).save(tmp_path / "grey.png")
    cube = read_cube(tmp_path / "grey.png")
    assert cube.data.shape == (3, 4, 4)
    for band in cube.data:
        np.testing.assert_allclose(band, grey / 255.0, atol=1e-7)


def test_sixteen_bit_png_is_divided_by_65535(tmp_path):
    grey = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    cube = read_cube(tmp_path / "deep.png")
    assert cube.source_dtype == "uint16"
    np.testing.assert_allclose(cube.data[1], grey / 65535.0, atol=1e-7)


def test_rgba_png_is_composited_over_black_and_alpha_dropped(tmp_path):
    pixels = np.zeros((2, 2, 4), np.uint8)
    pixels[..., :3] = 200
    pixels[..., 3] = [[255, 0], [51, 255]]  # opaque, transparent, 20 % opaque
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "alpha.png")
    cube = read_cube(tmp_path / "alpha.png")
    assert cube.data.shape == (3, 2, 2)
    expected = 200 / 255 * np.array([[1.0, 0.0], [0.2, 1.0]])
    for band in cube.data:
        np.testing.assert_allclose(band, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("1", ".png"), ("L", ".png"), ("LA", ".png"), ("P", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"),
     ("CMYK", ".jpg"), ("I;16", ".png"), ("L", ".jpg")],
)
def test_every_pillow_mode_ends_as_three_bands_in_unit_range(tmp_path, mode, suffix):
    Image.fromarray(rgb_pattern(6, 10)).convert(mode).save(tmp_path / f"x{suffix}")
    cube = read_cube(tmp_path / f"x{suffix}", photo_size=4)
    assert cube.data.shape == (3, 4, 4) and cube.data.dtype == np.float32
    assert 0.0 <= cube.data.min() and cube.data.max() <= 1.0


def test_palette_png_is_looked_up(tmp_path):
    image = Image.new("P", (3, 3))
    image.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    image.save(tmp_path / "palette.png")
    cube = read_cube(tmp_path / "palette.png")
    np.testing.assert_allclose(cube.data[:, 0, 0] * 255, [10, 20, 30], atol=1e-4)
    np.testing.assert_allclose(cube.data[:, 1, 1] * 255, [200, 100, 0], atol=1e-4)


def test_photo_size_centre_crops_a_wide_image_to_its_short_side(tmp_path):
    # 4 rows x 8 columns: the centre square is columns 2..5; both outer pairs are pure red.
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, :2, 0] = pixels[:, 6:, 0] = 255
    pixels[:, 2:6, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    cube = read_cube(tmp_path / "wide.png", photo_size=4)
    assert cube.data.shape == (3, 4, 4)
    np.testing.assert_allclose(cube.data[0], 0.0, atol=1e-7)  # no red from the cropped sides
    np.testing.assert_allclose(cube.data[2], 1.0, atol=1e-7)
    assert centre_square(8, 4) == (2, 0, 6, 4) and centre_square(3, 6) == (0, 1, 3, 4)


def test_photo_size_resizes_with_antialiasing_to_exactly_one_tile(tmp_path):
    checker = ((np.indices((64, 96)).sum(axis=0) % 2) * 255).astype(np.uint8)
    Image.fromarray(checker).save(tmp_path / "checker.png")
    cube = read_cube(tmp_path / "checker.png", photo_size=8)
    assert cube.data.shape == (3, 8, 8)
    # A one-pixel checkerboard averages to grey when antialiased (nearest would give 0 or 1).
    np.testing.assert_allclose(cube.data, 0.5, atol=0.05)


def test_photo_size_on_a_large_jpeg_still_gives_one_tile(tmp_path):
    Image.fromarray(rgb_pattern(12, 12).repeat(40, axis=0).repeat(30, axis=1)).save(tmp_path / "big.jpg")
    cube = read_cube(tmp_path / "big.jpg", photo_size=16)
    assert cube.data.shape == (3, 16, 16) and cube.data.min() >= 0 and cube.data.max() <= 1


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_photo_size_must_be_a_positive_integer(tmp_path, bad):
    Image.fromarray(rgb_pattern(4, 4)).save(tmp_path / "a.png")
    with pytest.raises(CubeFileError, match="photo_size"):
        read_cube(tmp_path / "a.png", photo_size=bad)


def test_truncated_jpeg_is_refused_with_a_reason(tmp_path):
    Image.fromarray(rgb_pattern(64, 64)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(CubeFileError, match="truncated or corrupt") as caught:
        read_cube(tmp_path / "cut.jpg")
    assert caught.value.path.endswith("cut.jpg") and "again" in caught.value.fix


def test_text_named_png_is_refused_as_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    with pytest.raises(CubeFileError, match="not a PNG or JPEG image"):
        read_cube(tmp_path / "notes.png")


def test_empty_jpeg_is_refused(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(CubeFileError, match="empty"):
        read_cube(tmp_path / "empty.jpg")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.fromarray(rgb_pattern(40, 40)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px > 2 x 100: Pillow's error threshold
    with pytest.raises(CubeFileError, match="too large to decode safely") as caught:
        read_cube(tmp_path / "bomb.png")
    assert "MAX_IMAGE_PIXELS" in caught.value.fix


def test_reading_photos_never_changes_them(tmp_path):
    Image.fromarray(rgb_pattern(8, 8)).save(tmp_path / "a.jpg")
    (tmp_path / "b.png").write_text("broken")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    for name in before:
        try:
            read_cube(tmp_path / name, photo_size=4)
        except CubeFileError:
            pass
    assert before == {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}


def test_a_folder_of_cat_and_dog_photos_is_ingested_one_sample_per_photo(tmp_path):
    raw = tmp_path / "01_raw" / "pets"
    for name in ("cats", "dogs"):
        (raw / name).mkdir(parents=True)
    Image.fromarray(rgb_pattern(20, 30)).save(raw / "cats" / "tabby.jpg")
    Image.fromarray(rgb_pattern(12, 12)[:, :, 0]).save(raw / "cats" / "grey.png")
    Image.fromarray(np.full((9, 16, 3), 90, np.uint8)).save(raw / "dogs" / "lab.PNG")
    Image.fromarray(np.full((40, 40, 4), 255, np.uint8), mode="RGBA").save(raw / "dogs" / "pug.png")
    (raw / "dogs" / "half.jpg").write_bytes((raw / "cats" / "tabby.jpg").read_bytes()[:200])
    (raw / "dogs" / "notes.png").write_text("not an image")
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}

    params = IngestionParams.from_dict({"tile_size": 8, "stride": 4, "show_progress": False})
    report, index = ingest_folder(raw, tmp_path / "cubes.h5", params)

    assert report["class_names"] == ["cats", "dogs"]
    reasons = {r["file"]: r["reason"] for r in report["rejected"]}
    assert set(reasons) == {"dogs/half.jpg", "dogs/notes.png"}
    assert "truncated or corrupt" in reasons["dogs/half.jpg"] and "not a PNG or JPEG" in reasons["dogs/notes.png"]
    assert dict(zip(index.source_file, index.label)) == {
        "cats/grey.png": 0, "cats/tabby.jpg": 0, "dogs/lab.PNG": 1, "dogs/pug.png": 1,
    }
    assert len(index) == 4 and set(index.window) == {"rows 0:8, cols 0:8"}
    store = CubeStore(tmp_path / "cubes.h5")
    assert store.info["num_bands"] == 3 and store.info["band_names"] == ["red", "green", "blue"]
    tiles = store.read(list(index.store_index))
    assert tiles.shape == (4, 3, 8, 8) and tiles.min() >= 0 and tiles.max() <= 1
    assert before == {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
