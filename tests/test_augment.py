import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from lesionssl.augment.preview import augment_preview
from lesionssl.augment.views import BT_PRESETS, RandomRotate90, Sobel, bt_views, eval_transform


def _image(size=40):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("preset", sorted(BT_PRESETS))
@pytest.mark.parametrize("normalize", ["imagenet", "none"])
def test_views_have_the_training_shape_and_differ(preset, normalize):
    torch.manual_seed(0)
    view_a, view_b = bt_views(preset, 32, normalize, ("rotate90", "cutout", "noise", "sobel"))
    a, b = view_a(_image()), view_b(_image())
    assert a.shape == b.shape == (3, 32, 32) and a.dtype == torch.float32
    assert not torch.equal(a, b)
    if normalize == "none":
        assert a.min() >= 0 and a.max() <= 1


def test_official_preset_matches_the_paper():
    official, seed = BT_PRESETS["official"], BT_PRESETS["seed"]
    assert official.crop_scale == (0.08, 1.0) and official.blur_p == (1.0, 0.1) and official.solarize_p == (0.0, 0.2)
    assert seed.crop_scale == (0.7, 1.0) and seed.jitter_strength == 0.6 and seed.rotation_degrees == 45
    view_a, _ = bt_views("official", 224, "imagenet")
    jitter = next(t for t in view_a.transforms if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], v2.ColorJitter)).transforms[0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))
    crop = view_a.transforms[0]
    assert crop.scale == (0.08, 1.0) and crop.interpolation == v2.InterpolationMode.BICUBIC


def test_each_image_gets_its_own_crop():
    torch.manual_seed(0)
    view_a, _ = bt_views("seed", 24, "none")
    image = _image()
    outputs = torch.stack([view_a(image) for _ in range(8)])
    assert len({tuple(o.flatten()[:20].tolist()) for o in outputs}) == 8


def test_rotate90_only_produces_quarter_turns():
    image = _image(8)
    turns = {k: torch.rot90(image, k, dims=(-2, -1)) for k in range(4)}
    torch.manual_seed(0)
    seen = set()
    for _ in range(60):
        out = RandomRotate90(p=1.0)(image)
        matches = [k for k, t in turns.items() if torch.equal(out, t)]
        assert matches and matches[0] != 0
        seen.add(matches[0])
    assert seen == {1, 2, 3}


def test_sobel_finds_a_vertical_edge():
    image = torch.zeros(3, 8, 8)
    image[:, :, 4:] = 1.0
    edges = Sobel()(image)
    assert edges.shape == (3, 8, 8) and edges[0, :, 3:5].min() > 0.9 and edges[0, :, 0].max() == 0


def test_eval_transform_is_deterministic():
    transform = eval_transform(16, "imagenet")
    assert torch.equal(transform(_image()), transform(_image()))


def test_augment_preview_draws_original_plus_two_views(synthetic, tmp_path):
    path = augment_preview([str(synthetic / "labelled")], tmp_path / "grid.png", image_size=32, rows=3)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (3 * 36 + 4, 3 * 32 + 16, 3)
