"""Backbones, their initialisations and the weights registry, and projection heads."""

#: torchvision ResNets lesionssl builds itself; any timm model is ``timm:NAME``.
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
TIMM_PREFIX = "timm:"
#: ``imagenet`` means torchvision's default (best) weights; V1/V2 can be named explicitly.
IMAGENET_WEIGHTS = {
    "resnet18": {"imagenet": "IMAGENET1K_V1", "imagenet-v1": "IMAGENET1K_V1"},
    "resnet34": {"imagenet": "IMAGENET1K_V1", "imagenet-v1": "IMAGENET1K_V1"},
    "resnet50": {"imagenet": "IMAGENET1K_V2", "imagenet-v1": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"},
    "resnet101": {"imagenet": "IMAGENET1K_V2", "imagenet-v1": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"},
}
#: Every initialisation a backbone may name besides a registered name or a path.
NAMED_INITS = ("random", *dict.fromkeys(name for weights in IMAGENET_WEIGHTS.values() for name in weights))
