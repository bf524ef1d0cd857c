import numpy as np
import pytest
from PIL import Image

from lesionssl.data.images import ImageLoadError, load_rgb, resize_shorter_center_crop


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("L", (20, 10), 128),
        lambda: Image.new("RGBA", (20, 10), (255, 0, 0, 0)),
        lambda: Image.new("P", (20, 10), 3),
        lambda: Image.new("CMYK", (20, 10), (0, 255, 0, 0)),
        lambda: Image.new("LA", (20, 10), (200, 255)),
        lambda: Image.fromarray(np.arange(200, dtype=np.uint16).reshape(10, 20) * 300),
    ],
    ids=["L", "RGBA", "P", "CMYK", "LA", "I16"],
)
def test_any_mode_loads_as_8bit_rgb(tmp_path, make):
    image = make()
    path = tmp_path / ("x.tif" if image.mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (20, 10)


def test_16bit_is_rescaled_not_clipped(tmp_path):
    array = (np.arange(200, dtype=np.uint16).reshape(10, 20) * 300).astype(np.uint16)
    Image.fromarray(array).save(tmp_path / "x.png")
    values = np.asarray(load_rgb(tmp_path / "x.png"))[..., 0]
    assert values.min() == 0 and values.max() == 255
    assert len(np.unique(values)) > 100  # clipping to 255 would leave few distinct values


def test_transparent_pixels_become_black(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "x.png")
    assert np.asarray(load_rgb(tmp_path / "x.png")).max() == 0


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (30, 10), (10, 20, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "x.jpg", exif=exif)
    assert load_rgb(tmp_path / "x.jpg").size == (10, 30)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 20])
def test_unreadable_file_names_the_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        load_rgb(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_rgb(tmp_path / "nope.png")


def test_resize_shorter_side_and_center_crop():
    image = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8), (30, 1))).convert("RGB")
    out = resize_shorter_center_crop(image, 15)
    assert out.shape == (15, 15, 3) and out.dtype == np.uint8
    # the centre of a horizontal ramp stays in the middle of the value range
    assert 20 < out[7, 7, 0] < 40


def test_large_jpeg_is_decoded_at_reduced_scale_without_visible_loss(tmp_path):
    y, x = np.mgrid[0:600, 0:800]
    smooth = np.stack([x / 800 * 255, y / 600 * 255, 128 + 100 * np.sin(x / 40.0) * np.cos(y / 50.0)], axis=-1).astype(
        np.uint8
    )
    Image.fromarray(smooth).save(tmp_path / "big.jpg", quality=95)
    reduced = load_rgb(tmp_path / "big.jpg", min_side=100)
    assert min(reduced.size) >= 100 and reduced.size[0] <= 400  # DCT scaling (1/2 .. 1/8) took place
    full = resize_shorter_center_crop(load_rgb(tmp_path / "big.jpg"), 50)
    fast = resize_shorter_center_crop(reduced, 50)
    assert np.abs(full.astype(int) - fast.astype(int)).mean() < 2.0
    # EXIF-rotated and small files are unaffected in shape
    assert load_rgb(tmp_path / "big.jpg", min_side=1000).size == (800, 600)
