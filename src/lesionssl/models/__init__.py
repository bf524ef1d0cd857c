"""Backbones, their initialisations and the weights registry, and projection heads."""

#: torchvision ResNets lesionssl builds itself; any timm model is ``timm:NAME``.
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
TIMM_PREFIX = "timm:"
