import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from scipy import stats
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from lesionssl.augment import batch as B
from lesionssl.augment.preview import augment_preview
from lesionssl.augment.views import EXTRAS, PAIR_PRESETS


def _images(n=4, size=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def _smooth_image(size=40):
    """A smooth colourful test image (random pixels make every crop look alike on average)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.stack([x, y, 0.5 + 0.5 * torch.sin(6 * x * y)])
    return (image * 255).round().byte()


@pytest.mark.parametrize("preset", sorted(PAIR_PRESETS))
@pytest.mark.parametrize("normalize", ["imagenet", "none"])
def test_views_have_the_training_shape_and_differ(preset, normalize):
    torch.manual_seed(0)
    a, b = B.two_views(preset, 32, normalize, EXTRAS)(_images())
    assert a.shape == b.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    assert not torch.equal(a, b)
    if normalize == "none":
        assert a.min() >= 0 and a.max() <= 1


def test_official_preset_matches_the_paper():
    first, second = B.two_view_specs("official", 224, "imagenet")
    assert first.crop_scale == (0.08, 1.0) and first.interpolation == "bicubic" and first.flip_p == 0.5
    assert first.jitter == pytest.approx((0.4, 0.4, 0.2, 0.1)) and first.jitter_p == 0.8 and first.grayscale_p == 0.2
    assert (first.blur_p, second.blur_p, first.solarize_p, second.solarize_p) == (1.0, 0.1, 0.0, 0.2)
    assert first.blur_kernel == 23 and first.rotation_p == 0 and first.blur_sigma == pytest.approx((0.1, 2.0))
    seed, _ = B.two_view_specs("seed", 64, "none")
    assert (
        seed.crop_scale == (0.7, 1.0)
        and seed.jitter == pytest.approx((0.24, 0.24, 0.12, 0.06))
        and seed.rotation_degrees == 45
    )


def test_blur_sigma_is_stated_at_224_px_and_scales_with_the_view():
    for size in (32, 64, 224):
        first, _ = B.two_view_specs("official", size, "none")
        assert first.blur_sigma == pytest.approx((0.1 * size / 224, 2.0 * size / 224))


def test_small_data_preset_and_overrides():
    from dataclasses import replace

    from lesionssl.augment.views import PAIR_PRESETS

    first, second = B.two_view_specs("small-data", 64, "imagenet")
    assert first.crop_scale == (0.25, 1.0) and first.rotate90_p == 0.75 and first.jitter[3] == pytest.approx(0.02)
    assert (first.solarize_p, second.solarize_p, first.blur_p, second.blur_p) == (0.0, 0.0, 0.5, 0.1)
    wider, _ = B.two_view_specs(replace(PAIR_PRESETS["small-data"], crop_scale=(0.08, 1.0)), 64, "imagenet")
    assert wider.crop_scale == (0.08, 1.0) and wider.rotate90_p == 0.75


def test_unknown_preset_or_extra_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        B.two_view_specs("simclr", 32, "none")
    with pytest.raises(ValueError, match="unknown extra"):
        B.two_view_specs("seed", 32, "none", ("mixup",))


def test_each_image_gets_its_own_crop():
    torch.manual_seed(0)
    batch = _smooth_image().expand(8, -1, -1, -1).contiguous()
    spec = B.ViewSpec(size=24, crop_scale=(0.2, 1.0), flip_p=0.0)
    outputs = B.BatchView(spec)(batch)
    assert len({tuple(o.flatten()[:50].tolist()) for o in outputs}) == 8


def test_parameters_are_independent_per_image_at_the_stated_rates():
    torch.manual_seed(0)
    spec, _ = B.two_view_specs("official", 32, "none")
    params = B.BatchView(spec).sample(4000, 40, 40)
    assert params["flip"].float().mean() == pytest.approx(0.5, abs=0.03)
    assert params["jitter"].float().mean() == pytest.approx(0.8, abs=0.03)
    assert params["grayscale"].float().mean() == pytest.approx(0.2, abs=0.03)
    # independent draws: flip and grayscale are uncorrelated, jitter factors cover their ranges
    assert abs(np.corrcoef(params["flip"].float(), params["grayscale"].float())[0, 1]) < 0.05
    factors = params["jitter_factors"]
    assert factors[:, 0].min() >= 0.6 and factors[:, 0].max() <= 1.4 and factors[:, 0].std() > 0.2
    assert factors[:, 3].abs().max() <= 0.1
    # sigma 0.1-2 px at 224 px, scaled to the 32 px view
    assert params["blur_sigma"].min() >= 0.1 * 32 / 224 and params["blur_sigma"].max() <= 2.0 * 32 / 224
    # every order of the four colour adjustments occurs (torchvision draws a permutation per call)
    assert len({tuple(o) for o in params["jitter_order"].tolist()}) == 24


def test_crop_boxes_follow_torchvision_random_resized_crop():
    torch.manual_seed(0)
    ours = B.sample_crop_boxes(3000, 40, 50, (0.08, 1.0), (3 / 4, 4 / 3))
    image = torch.zeros(3, 40, 50)
    reference = torch.tensor(
        [T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(3000)], dtype=torch.float32
    )
    assert (ours[:, 2] + ours[:, 0] <= 40).all() and (ours[:, 3] + ours[:, 1] <= 50).all() and (ours >= 0).all()
    for column in range(4):  # top, left, height, width
        assert stats.ks_2samp(ours[:, column].numpy(), reference[:, column].numpy()).pvalue > 0.001


@pytest.mark.parametrize(
    "op, reference, factors",
    [
        (B.adjust_brightness, TF.adjust_brightness, [0.6, 0.9, 1.0, 1.4]),
        (B.adjust_contrast, TF.adjust_contrast, [0.6, 0.9, 1.0, 1.4]),
        (B.adjust_saturation, TF.adjust_saturation, [0.0, 0.8, 1.0, 1.2]),
        (B.adjust_hue, TF.adjust_hue, [-0.1, -0.02, 0.05, 0.5]),
    ],
)
def test_colour_adjustments_equal_torchvision_per_image(op, reference, factors):
    images = _images().float() / 255
    ours = op(images, torch.tensor(factors))
    expected = torch.stack([reference(image, f) for image, f in zip(images, factors)])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_blur_equals_torchvision_per_image():
    images = _images(size=20).float() / 255
    sigmas = torch.tensor([0.1, 0.7, 1.3, 2.0])
    ours = B.gaussian_blur(images, sigmas, 7)
    expected = torch.stack([TF.gaussian_blur(image, [7, 7], [float(s)] * 2) for image, s in zip(images, sigmas)])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_crop_equals_torchvision_resized_crop():
    image = _images(1, 32)  # at most 1.5x the output: resampled directly
    spec = B.ViewSpec(size=24, crop_scale=(0.5, 1.0), flip_p=0.0)
    view = B.BatchView(spec)
    params = view.sample(1, 32, 32)
    params["box"] = torch.tensor([[3.0, 5.0, 26.0, 26.0]])  # shrinking: no sample falls past the crop's edge pixels
    ours = view.apply(image, params)[0]
    # normalisation undone: compare in [0, 1]
    ours = ours * view.std[0] + view.mean[0]
    expected = TF.resized_crop(
        image[0].float() / 255, 3, 5, 26, 26, [24, 24], InterpolationMode.BILINEAR, antialias=False
    )
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_flip_and_quarter_turns_are_exact():
    image = _images(1, 16)
    spec = B.ViewSpec(size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=1.0, normalize="none")
    flipped = B.BatchView(spec)(image)[0]
    torch.testing.assert_close(flipped, torch.flip(image[0].float() / 255, dims=[-1]), atol=1e-5, rtol=0)
    turns = [torch.rot90(image[0].float() / 255, k, dims=(-2, -1)) for k in range(4)]
    spec = B.ViewSpec(
        size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, rotate90_p=1.0, normalize="none"
    )
    torch.manual_seed(0)
    seen = set()
    for out in B.BatchView(spec)(image.expand(30, -1, -1, -1).contiguous()):
        matches = [k for k, t in enumerate(turns) if torch.allclose(out, t, atol=1e-5)]
        assert matches and matches[0] != 0
        seen.add(matches[0])
    assert seen == {1, 2, 3}


def test_rotation_fills_corners_with_zero():
    image = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    spec = B.ViewSpec(
        size=32,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        rotation_degrees=45.0,
        rotation_p=1.0,
        normalize="none",
    )
    view = B.BatchView(spec)
    params = view.sample(1, 32, 32)
    params["angle"] = torch.tensor([45.0])
    out = view.apply(image, params)[0]
    assert out[:, 0, 0].max() == 0 and out[:, 16, 16].min() == 1


def _reference_pipeline(spec: B.ViewSpec) -> v2.Compose:
    """The per-image torchvision definition of a view (no normalisation)."""
    b, c, s, h = spec.jitter
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                spec.size, scale=spec.crop_scale, interpolation=InterpolationMode.BICUBIC, antialias=True
            ),
            v2.RandomHorizontalFlip(spec.flip_p),
            v2.RandomApply([v2.RandomRotation(spec.rotation_degrees)], p=spec.rotation_p),
            v2.RandomApply(
                [v2.RandomChoice([v2.Lambda(lambda x, k=k: torch.rot90(x, k, (-2, -1))) for k in (1, 2, 3)])],
                p=spec.rotate90_p,
            ),
            v2.RandomApply([v2.ColorJitter(b, c, s, h)], p=spec.jitter_p),
            v2.RandomGrayscale(spec.grayscale_p),
            v2.RandomApply([v2.GaussianBlur(spec.blur_kernel, sigma=spec.blur_sigma)], p=spec.blur_p),
            v2.RandomSolarize(threshold=128, p=spec.solarize_p),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


@pytest.mark.parametrize("preset", sorted(PAIR_PRESETS))
def test_views_match_the_per_image_definition_in_distribution(preset):
    torch.manual_seed(0)
    first, second = B.two_view_specs(preset, 32, "none")
    image = _smooth_image(36)
    n = 600
    for spec in (first, second):
        ours = B.BatchView(spec)(image.expand(n, -1, -1, -1).contiguous())
        reference = torch.stack([_reference_pipeline(spec)(image) for _ in range(n)])
        # per-image summaries: mean intensity, channel spread (colour), and centre-vs-border contrast
        for summary in (
            lambda x: x.mean(dim=(1, 2, 3)),
            lambda x: x.std(dim=1).mean(dim=(1, 2)),
            lambda x: x[:, :, 8:24, 8:24].mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)),
        ):
            result = stats.ks_2samp(summary(ours).numpy(), summary(reference).numpy())
            assert result.pvalue > 1e-3, result


def test_sobel_finds_a_vertical_edge():
    image = torch.zeros(1, 3, 8, 8)
    image[:, :, :, 4:] = 1.0
    edges = B.sobel(image)[0]
    assert edges.shape == (3, 8, 8) and edges[0, :, 3:5].min() > 0.9 and edges[0, :, 0].max() == 0


def test_float_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="uint8 batch"):
        B.finetune_view(16, "none")(torch.rand(2, 3, 20, 20))


def test_eval_view_is_torchvision_resize_and_deterministic():
    images = _images(3, 40)
    view = B.EvalView(24, "none")
    expected = torch.stack([TF.resize(image.float() / 255, [24, 24], antialias=True) for image in images])
    torch.testing.assert_close(view(images), expected, atol=1e-5, rtol=0)
    assert torch.equal(view(images), view(images))
    assert B.EvalView(40, "imagenet")(images).shape == (3, 3, 40, 40)


def test_augment_preview_draws_original_plus_two_views(synthetic, tmp_path):
    path = augment_preview([str(synthetic / "labelled")], tmp_path / "grid.png", image_size=32, rows=3)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (3 * 36 + 4, 3 * 32 + 16, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_views_on_the_gpu_equal_the_cpu_for_the_same_parameters():
    torch.manual_seed(0)
    spec, _ = B.two_view_specs("official", 32, "imagenet", ("rotate90", "cutout", "sobel"))
    view, images = B.BatchView(spec), _images(16)
    params = view.sample(16, 40, 40)
    cpu = view.apply(images, params)
    gpu = view.cuda().apply(images.cuda(), params)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)


def test_large_stored_images_are_antialiased_before_resampling():
    # thin stripes (1 px in 3) seen at 1/6 of their resolution must average to 1/3, not alias
    stripes = ((torch.arange(96) % 3 == 2).float() * 255).byte().view(1, 1, 1, 96).expand(1, 3, 96, 96).contiguous()
    spec = B.ViewSpec(size=16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, normalize="none")
    out = B.BatchView(spec)(stripes)
    assert out.shape == (1, 3, 16, 16)
    assert abs(out.mean().item() - 1 / 3) < 0.03 and out.std().item() < 0.05
