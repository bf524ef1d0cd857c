"""The settings of every stage (split, pretrain, finetune, select, compare), validated: unknown
keys, wrong types and impossible values are rejected before anything runs, naming the key."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_type_hints

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from lesionssl.augment.views import PAIR_PRESETS, Extra, Normalization, PairAugmentation, PairPreset
from lesionssl.config.contract import Strict, validate
from lesionssl.config.recipes import (
    EXPERIMENT_PRESETS,
    FINETUNE_PRESETS,
    METHOD_SHORTHANDS,
    PRETRAIN_RECIPES,
    SMALL_DATA_LR,
    SMALL_TRAINING_SET,
    apply_experiment_preset,
)
from lesionssl.data.colour import DEFAULT_P, ColourConstancy, ColourMethod
from lesionssl.models import NAMED_INITS, RESNETS, TIMM_PREFIX
from lesionssl.models.lite import LITE
from lesionssl.pretraining import method_names


#: A torchvision ResNet, an EfficientNet-Lite, or any timm model as ``timm:NAME`` (checked when it is built).
def _known_backbone(name: str) -> str:
    if name not in RESNETS + tuple(LITE) and not (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)):
        raise ValueError(
            f"unknown backbone {name!r}; choose from {', '.join(RESNETS + tuple(LITE))} or {TIMM_PREFIX}NAME (any timm model)"
        )
    return name


Backbone = Annotated[
    str, AfterValidator(_known_backbone), Field(description=f"{' | '.join(RESNETS + tuple(LITE))} | {TIMM_PREFIX}NAME")
]


Precision = Literal["32-true", "bf16-mixed", "16-mixed"]


Normalize = Normalization


#: The decoded store keeps images this much above ``image_size``, so random crops have room (as 256 -> 224).
STORE_MARGIN = 1.14


#: Evaluation protocols of ``compare``.
PROTOCOLS = ("finetune", "linear", "knn")


class DecodesImages(Strict):
    """The keys of every stage that decodes images into its store: colour constancy, applied once
    when the store is built (and part of its cache key)."""

    colour_constancy: ColourMethod = Field(
        "none",
        description="none | shades-of-gray (Finlayson & Trezzi 2004): every image brought to a common illuminant before anything else",
    )
    colour_constancy_p: float = Field(
        DEFAULT_P, gt=0, description="the Minkowski norm of shades-of-gray (6: Barata et al. 2015; 1 is Gray World)"
    )

    @property
    def colour(self) -> ColourConstancy:
        return ColourConstancy(self.colour_constancy, self.colour_constancy_p)


#: Near-duplicate detector defaults (``split --dedup``, ``audit``), chosen by inspecting the pairs
#: they link on ../shared/data/skin-lesions (EVIDENCE.md): pHash distance and thumbnail correlation.
HASH_THRESHOLD = 4


COSINE_THRESHOLD = 0.98


class SplitConfig(DecodesImages):
    """How ``split`` carves the labelled images (see :mod:`lesionssl.data.split`). Its colour
    constancy applies to the images the near-duplicate search decodes (``dedup``): two photographs
    of one lesion under different lights then match."""

    per_class_cap: int | None = Field(None, ge=1)
    seed_isic2019: bool = Field(False, description="the seed study's exact ISIC 2019 design: 2,554 train / 19,423 test")
    per_class: int | None = Field(None, ge=1)
    fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="this share of each class for training (1.0: all of it, e.g. the train/ folder of your own train/ test/ tree)",
    )
    val: int = Field(0, ge=0)
    group_by: str | None = None
    seed: int = 0
    transductive: bool = False
    test_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="hold out this share of the labelled groups as test; labels and pool come from the rest",
    )
    hold_out: dict[str, list[str]] = Field(
        default_factory=dict,
        description="metadata column -> values whose images form the external split (never in the pool)",
    )
    hold_out_pool: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="send this lesion-grouped share of the held-out site to the pretraining pool, labels removed (split site-pool); the rest stays external",
    )
    dedup: bool = Field(False, description="merge near-duplicate clusters into one group each")
    dedup_hash: int = Field(
        HASH_THRESHOLD, ge=0, le=63, description="near-duplicates: largest pHash Hamming distance (of 63 bits)"
    )
    dedup_cosine: float = Field(
        COSINE_THRESHOLD, ge=-1, le=1, description="near-duplicates: smallest thumbnail correlation"
    )

    @field_validator("hold_out", mode="before")
    @classmethod
    def _values_as_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_mode(self) -> SplitConfig:
        self.check_mode()
        return self

    def check_mode(self) -> None:
        if sum(v is not None for v in (self.per_class_cap, self.per_class, self.fraction)) + self.seed_isic2019 != 1:
            raise ValueError("set exactly one of per_class_cap, per_class, fraction, seed_isic2019")
        if self.seed_isic2019 and (self.test_fraction is not None or self.hold_out or self.dedup):
            raise ValueError("seed_isic2019 is the seed's fixed design: it takes no test_fraction, hold_out or dedup")
        if self.hold_out_pool is not None and not self.hold_out:
            raise ValueError("hold_out_pool sends a share of a held-out site to the pool: it needs hold_out")
        if self.colour.active and not self.dedup:
            raise ValueError(
                "a split decodes images only to find near-duplicates: colour_constancy needs dedup (the stages that train set their own)"
            )

    @property
    def pool(self) -> Literal["inductive", "transductive"]:
        """Whether the pretraining pool holds the test images (unlabelled): the seed's transductive design."""
        return "transductive" if self.transductive else "inductive"


def _listify(value: Any) -> Any:
    """One image source may be given alone, and as a path."""
    value = [value] if isinstance(value, (str, Path)) else value
    return [str(v) if isinstance(v, Path) else v for v in value] if isinstance(value, list) else value


#: An initialisation: a name, or a path (given as a string or a Path).
Init = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, Path) else v)]


#: What fine-tuning starts from when the user names nothing: the installed supervised ImageNet
#: weights, far above random weights on the internal test of EVIDENCE.md (+0.09 to +0.16).
DEFAULT_BACKBONE = "efficientnet_lite0"


def default_init(backbone: str) -> str:
    """``imagenet`` where the backbone's ImageNet weights come installed (no download), else ``random``."""
    return "imagenet" if backbone in LITE else "random"


Sources = Annotated[
    list[str],
    BeforeValidator(_listify),
    Field(
        description="image sources (repeatable): shared layout, ImageFolder, plain folder, path,label CSV, ISIC ground truth, HAM10000 metadata"
    ),
]


class SplitCommand(SplitConfig):
    """``lesionssl split``: the split settings, where the images come from and where the manifest goes."""

    data: Sources = Field(default_factory=list)
    out: Path = Field(Path("split.csv"), description="manifest CSV to write")
    images: Path | None = Field(None, description="image folder for ISIC / HAM10000 label files")
    skip_missing: bool = Field(False, description="drop label rows whose image file is missing")
    image_column: str | None = Field(
        None, description="a label CSV's column of image files or ids (any layout; with label_column)"
    )
    label_column: str | None = Field(
        None, description="a label CSV's column of class labels (any layout; with image_column)"
    )
    labels: Path | None = Field(
        None,
        description="an expert's filled-in CSV from `lesionssl select`: its labels join the training set of the manifest the images were selected from",
    )
    manifest: Path | None = Field(
        None, description="with labels: the manifest to add them to (default: the one the selection records)"
    )
    data_root: Path | None = Field(
        None, description="with labels: the folder that now holds the manifest's images, when they moved"
    )

    def check_mode(self) -> None:
        if self.labels is not None:
            if self.data:
                raise ValueError("labels adds an expert's labels to a manifest: give it without data")
            return
        if self.manifest is not None:
            raise ValueError("manifest is read with labels (an expert's filled-in CSV); to make a manifest, give data")
        if not self.data:
            raise ValueError("data is required (or labels, to add an expert's labels to a manifest)")
        super().check_mode()


class RuntimeConfig(Strict):
    """Where and how training runs (Lightning trainer settings)."""

    precision: Precision = "32-true"
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    num_workers: int = Field(0, ge=0)
    channels_last: bool = False
    sync_batchnorm: bool = Field(False, description="SyncBN across GPUs (as the official code); not available on CPU")


#: The decoded store keeps images this much above ``image_size``, so random crops have room.
StoreMargin = Annotated[
    float, Field(ge=1.0, le=4.0, description=f"stored side / image_size (256 -> 224 is {STORE_MARGIN})")
]


#: Label-selection strategies (:mod:`lesionssl.selection.strategies`).
STRATEGY_NAMES = ("typiclust", "probcover", "kcenter", "random")


class OnFeatures(DecodesImages):
    """What a stage that reads a manifest's images through a backbone's frozen features needs
    (``select``, ``shift``); each says what its manifest and weights are for."""

    manifest: Path
    data_root: Path | None = Field(None, description="the folder that now holds the manifest's images, when they moved")
    backbone: Backbone = DEFAULT_BACKBONE
    init: Init = "imagenet"
    image_size: int = Field(64, ge=16)
    store_margin: StoreMargin = STORE_MARGIN
    normalize: Normalize = Field("auto", description="auto: what the weights record, ImageNet's otherwise")
    seed: int = 0

    @field_validator("backbone", mode="before")
    @classmethod
    def _architecture_not_weights(cls, value: Any) -> Any:
        if isinstance(value, (str, Path)) and (
            Path(value).suffix in (".safetensors", ".pth", ".pt", ".ckpt") or Path(value).is_file()
        ):
            raise ValueError(
                f"backbone names the architecture (resnet18, timm:NAME); weights go in init: --init {value}"
            )
        return value


class SelectConfig(OnFeatures):
    """``lesionssl select``: which pool images an expert should label next, chosen on a backbone's features."""

    manifest: Path = Field(description="manifest from `lesionssl split`: candidates are its unlabelled pool images")
    budget: int = Field(ge=1, description="how many images to pick")
    strategy: Literal[STRATEGY_NAMES] = Field(
        "typiclust",
        description="typiclust | probcover (typical and diverse; best at small budgets) | kcenter (coverage) | random",
    )
    backbone: Backbone = "resnet18"
    init: Init = Field(
        "random",
        description="the features' weights: a backbone file from `lesionssl pretrain` (recommended), random, imagenet, a registered name",
    )
    exclude: list[Path] = Field(
        default_factory=list,
        description="CSV files (an `image` column) of images already labelled or sent out: never picked, counted as labelled",
    )
    out: Path = Field(
        Path("to_label.csv"),
        description="CSV to fill in (an empty label column); an HTML page of thumbnails is written beside it",
    )
    cache: Path | None = Field(
        None, description="feature cache folder; default: features/ beside the manifest (shared with compare's probes)"
    )


class ShiftConfig(OnFeatures):
    """``lesionssl shift``: how far each test split or site is from the pretraining pool, on a backbone's features."""

    manifest: Path = Field(
        description="manifest from `lesionssl split`: its pool from the source archives is the reference; its test split, the site's pool share and external sites are measured"
    )
    init: Init = Field(
        "imagenet",
        description="the features' weights: imagenet, a backbone file from `lesionssl pretrain`, random, a registered name",
    )
    site_column: str | None = Field(
        None, description="metadata column naming each external image's site; default: the split's hold_out column"
    )
    out: Path = Field(Path("shift"), description="folder for shift.csv, priors.csv, recall.csv, map.png and index.html")


class SelectionConfig(Strict):
    """``compare``'s simulated label-selection study: per initialisation, strategy and seed, the
    images each strategy picks on that initialisation's features, in rounds up to each total budget."""

    strategies: list[Literal[STRATEGY_NAMES]] = Field(default_factory=lambda: list(STRATEGY_NAMES), min_length=1)
    budgets: list[int] = Field(min_length=1, description="total labels after each round (e.g. 40, 80, 160, 320)")

    @field_validator("budgets")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(b < 1 for b in value):
            raise ValueError(f"budgets must be positive numbers of labels, got {value}")
        return sorted(set(value))


#: Per tracker: the module it needs and the extra that installs it.
TRACKERS = {"tensorboard": ("tensorboard", "track"), "mlflow": ("mlflow", "track"), "wandb": ("wandb", "wandb")}


class TrackingConfig(Strict):
    """Experiment tracking besides the CSV files, each an optional extra: TensorBoard and MLflow
    (``pip install 'lesionssl[track]'``), Weights & Biases (``lesionssl[wandb]``).

    ``auto`` uses a tracker when its package is installed; ``true`` requires it (a clear error
    names the extra to install); ``false`` turns it off.
    """

    tensorboard: bool | Literal["auto"] = "auto"
    mlflow: bool | Literal["auto"] = "auto"
    wandb: bool = Field(
        False, description="Weights & Biases (needs the [wandb] extra and a login, or WANDB_MODE=offline)"
    )
    mlflow_uri: str | None = Field(
        None, description="default: sqlite:///<out>/mlflow.db (compare: one database per experiment); or a server URI"
    )
    wandb_project: str | None = Field(None, description="default: the experiment name")
    experiment: str = "lesionssl"

    @model_validator(mode="after")
    def _installed(self) -> TrackingConfig:
        for name, (module, extra) in TRACKERS.items():
            if getattr(self, name) is True and importlib.util.find_spec(module) is None:
                raise ValueError(
                    f"{name}: true needs the {module} package: pip install 'lesionssl[{extra}]' (or set {name}: false)"
                )
        return self

    def enabled(self, name: str) -> bool:
        """Whether a tracker runs: ``auto`` when its package is installed, ``true`` always."""
        wanted = getattr(self, name)
        return wanted is True or (wanted == "auto" and importlib.util.find_spec(TRACKERS[name][0]) is not None)


def _optional_fields(source: type) -> dict[str, Any]:
    """Every field of a dataclass, optional (None = keep the preset's value)."""
    return {name: (kind | None, None) for name, kind in get_type_hints(source).items()}


#: Changes to an augmentation preset (``augment: {crop_scale: [0.08, 1.0]}``): the fields of
#: :class:`lesionssl.augment.views.PairAugmentation`, each optional.
AugmentOverrides = create_model(
    "AugmentOverrides",
    __base__=Strict,
    __doc__="Changes to the augmentation preset's parameters; unset fields keep the preset's.",
    **_optional_fields(PairAugmentation),
)


class PretrainConfig(DecodesImages):
    """Self-supervised pretraining (``lesionssl pretrain``).

    ``method`` names the method (:data:`lesionssl.pretraining.methods.METHODS`) and ``method_kwargs``
    its hyperparameters; ``recipe`` names a set of settings (:data:`PRETRAIN_RECIPES`). Keys
    given explicitly override the recipe, which overrides the method's defaults.
    """

    #: Keys besides the fields, folded into ``method_kwargs`` (``projector: [2048, 2048]``).
    SHORTHANDS: ClassVar[tuple[str, ...]] = METHOD_SHORTHANDS

    data: Sources = Field(default_factory=list)
    manifest: Path | None = Field(
        None, description="manifest from `lesionssl split`: its pretraining pool is used (else every image of data)"
    )
    data_root: Path | None = Field(
        None,
        description="the folder that now holds the manifest's images, when they moved (e.g. to node scratch); default: the root the manifest recorded",
    )
    out: Path = Path("runs/pretrain")
    recipe: Literal[tuple(PRETRAIN_RECIPES)] = Field(
        "small-data",
        description="small-data (measured best from random weights on small dermoscopy pools) | continue (trained weights: the default when --init is not random) | seed (Haggerty & Chandra) | official (Zbontar et al.)",
    )
    backbone: Backbone = "resnet18"
    init: Init = "random"
    image_size: int = Field(64, ge=16)
    store_margin: StoreMargin = STORE_MARGIN
    batch_size: int = Field(128, ge=2)
    epochs: int = Field(50, ge=1, description="50: the length measured on ../shared/data/skin-lesions (EVIDENCE.md)")
    method: str = Field("barlow_twins", description=" | ".join(method_names()))
    method_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="the method's hyperparameters (projector widths, loss weights); `projector` and `lambd` may also be given at the top level",
    )
    positives: Literal["self", "lesion"] = Field(
        "self",
        description="self: two views of one image; lesion: two different images of one lesion (the manifest's group) where the pool has several",
    )
    augmentation: PairPreset = "small-data"
    augment: AugmentOverrides = Field(
        default_factory=AugmentOverrides,
        description="changes to the augmentation preset, e.g. {crop_scale: [0.08, 1.0]}",
    )
    extra_augmentations: list[Extra] = Field(default_factory=list)
    normalize: Normalize = Field(
        "auto",
        description="auto: what the initialisation records (timm's pretrained config, a registered entry), ImageNet's otherwise",
    )
    optimizer: Literal["adam", "lars"] = Field(
        "adam", description="adam: fastai Adam + 1cycle; lars: official LARS + warm-up + cosine"
    )
    lr: float | Literal["find"] = Field(1e-3, description="adam: the 1cycle maximum, or 'find' (LR finder, valley)")
    weight_decay: float | None = Field(
        None,
        ge=0,
        description="each recipe sets its own (small-data 1e-5); null: 0.01 for adam (fastai's default, as the seed ran), 1.5e-6 for lars",
    )
    lr_weights: float = Field(0.2, gt=0, description="lars: LR of weights per 256 images")
    lr_biases: float = Field(0.0048, gt=0, description="lars: LR of biases and BN per 256 images")
    lars_eta: float = Field(0.001, gt=0)
    lars_momentum: float = Field(0.9, ge=0, lt=1)
    warmup_epochs: int | None = Field(
        None, ge=0, description="lars: linear warm-up; null = 10, or a tenth of shorter runs"
    )
    projector_warmup_epochs: int | None = Field(
        None,
        ge=0,
        description="epochs training only the projector, encoder frozen; null = 1 when starting from trained weights, 0 from random",
    )
    projector_init: Literal["fresh", "checkpoint"] = Field(
        "fresh",
        description="checkpoint: load the projector of a full Barlow Twins checkpoint given as init (no warm-up then)",
    )
    encoder_lr_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="adam: the encoder's LR as a share of the projector's (a slower encoder keeps more of trained weights)",
    )
    bn_statistics: Literal["update", "frozen"] = Field(
        "update", description="frozen: the encoder's BatchNorm running statistics stay those of --init"
    )
    l2sp: float = Field(
        0.0, ge=0, description="alpha of L2-SP (Li et al. 2018), a pull toward the encoder's starting weights; 0: none"
    )
    site_pool: Literal["include", "exclude"] = Field(
        "include",
        description="the held-out site's images that `split --hold-out-pool` sent to the pool: include them, or exclude them (pretrain on the source archives only, same split)",
    )
    knn_k: int = Field(20, ge=1, description="neighbours of the per-epoch kNN monitor (needs train and val splits)")
    snapshot_every: int | None = Field(
        None,
        ge=1,
        description="also export the backbone every N epochs (snapshots/epoch-<N>.safetensors), to measure features against epochs",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    seed: int = 0
    resume: bool = Field(False, description="continue an interrupted run in out, or keep a finished one")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="before")
    @classmethod
    def _fold_shorthands(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        shorthands = {k: values.pop(k) for k in METHOD_SHORTHANDS if k in values}
        if shorthands:
            values["method_kwargs"] = {**shorthands, **(values.get("method_kwargs") or {})}
        return values

    @model_validator(mode="after")
    def _apply_recipe_and_check(self) -> PretrainConfig:
        # The recipe fills only the keys the user left out, and they stay unset (model_fields_set),
        # so a compare arm's changes to its pretrain section get their own recipe's values.
        if "recipe" not in self.model_fields_set:  # trained weights are continued, not trained as from scratch
            self.__dict__["recipe"] = "continue" if self.init != "random" else "small-data"
        for key, value in PRETRAIN_RECIPES[self.recipe].items():
            if key != "method_defaults" and key not in self.model_fields_set:
                self.__dict__[key] = value
        # The method's own hyperparameters are checked where the method is built (pretraining's
        # build_method, first thing in a pretraining or a compare); here only what the config knows.
        if self.method not in method_names():
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(method_names())}")
        if any(width < 1 for width in self.method_kwargs.get("projector") or []):
            raise ValueError("projector widths must be positive")
        if self.optimizer == "lars" and self.encoder_lr_scale != 1.0:
            raise ValueError(
                "encoder_lr_scale applies to optimizer adam; LARS sets its own LRs (lr_weights, lr_biases)"
            )
        return self

    @property
    def resolved_method_kwargs(self) -> dict[str, Any]:
        """``method_kwargs`` over the recipe's defaults for this method (the method fills the rest)."""
        return {**PRETRAIN_RECIPES[self.recipe]["method_defaults"].get(self.method, {}), **self.method_kwargs}

    @property
    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 0.01 if self.optimizer == "adam" else 1.5e-6

    @property
    def resolved_warmup_epochs(self) -> int:
        return self.warmup_epochs if self.warmup_epochs is not None else min(10, max(1, self.epochs // 10))

    @property
    def resolved_projector_warmup_epochs(self) -> int:
        """Projector-only epochs: a fresh projector on trained weights first learns to read them."""
        if self.optimizer == "lars" or self.projector_init == "checkpoint":
            return 0
        if self.projector_warmup_epochs is not None:
            return self.projector_warmup_epochs
        return 0 if self.init == "random" else 1

    @property
    def augmentation_parameters(self) -> PairAugmentation:
        """The preset with the ``augment`` overrides applied."""
        changes = {
            k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.model_dump(exclude_none=True).items()
        }
        return replace(PAIR_PRESETS[self.augmentation], **changes)


class ExternalSet(Strict):
    """A second labelled dataset every run is also evaluated on (domain shift)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    data: Sources = Field(min_length=1)
    images: str | None = None
    skip_missing: bool = False


class FinetuneConfig(DecodesImages):
    """The transfer protocol (``lesionssl finetune``): head epoch, unfreeze, LR finder, 1cycle."""

    recipe: Literal[tuple(FINETUNE_PRESETS)] | None = Field(
        None, description="seed | recommended: a named set of settings; explicit keys override it"
    )
    data: Sources = Field(
        default_factory=list, description="image sources, split with the split section when no manifest is given"
    )
    manifest: Path | None = Field(None, description="manifest from `lesionssl split`")
    data_root: Path | None = Field(
        None,
        description="the folder that now holds the manifest's images, when they moved (e.g. to node scratch); default: the root the manifest recorded",
    )
    split: SplitConfig | None = Field(None, description="how to split data when no manifest is given")
    out: Path = Path("runs/finetune")
    backbone: Backbone = Field(
        DEFAULT_BACKBONE,
        description="the architecture; default: EfficientNet-Lite0, whose ImageNet weights come installed",
    )
    init: Init = Field(
        "random",
        description=" | ".join(NAMED_INITS)
        + " | a registered name | PATH to a backbone or checkpoint; default: imagenet where the backbone's ImageNet weights are installed (Lite0-2), random otherwise",
    )
    image_size: int = Field(64, ge=16)
    store_margin: StoreMargin = STORE_MARGIN
    batch_size: int = Field(64, ge=2)
    epochs: int = Field(10, ge=1)
    head_epochs: int = Field(1, ge=0)
    head_lr: float = Field(1e-3, gt=0)
    freeze: Literal["fastai", "linear-probe"] = "fastai"
    lr: float | Literal["find", "auto"] = Field(
        "auto",
        description=f"find: the LR finder; a number: a fixed LR; auto: a fixed {SMALL_DATA_LR:g} for training sets of at most {SMALL_TRAINING_SET} images (measured above the finder there, EVIDENCE.md), the finder above",
    )
    lr_suggestion: Literal["valley", "minimum", "steep", "slide"] = "valley"
    weight_decay: float = Field(0.0, ge=0)
    normalize: Normalize = Field(
        "auto",
        description="auto: what the initialisation records (timm's pretrained config, a registered entry, a lesionssl backbone's own), ImageNet's otherwise",
    )
    tta: int = Field(0, ge=0, description="augmented test views averaged with the plain one (seed: 3)")
    sampling: Literal["shuffle", "class-balanced"] = "shuffle"
    loss_weights: Literal["none", "balanced"] = "none"
    malignant_classes: list[str] | None = Field(
        None,
        description="the classes summed into P(malignant), for the operating point (e.g. [malignant] or [OSCC]); default: MEL, BCC, SCC, AK when the classes are ISIC 2019's, none otherwise",
    )
    test_prior: Literal["train", "uniform", "pool"] | dict[str, float] = Field(
        "train",
        description="post-hoc logit adjustment target: train (none), uniform, pool (EM on unlabelled images) or {class: p}",
    )
    external: list[ExternalSet] = Field(default_factory=list, description="extra labelled test sets (domain shift)")
    adapt_bn: bool = Field(
        False,
        description="also evaluate every external set with BatchNorm statistics re-estimated on its images (AdaBN, as `predict --adapt-bn`), reported as <name>-adabn; fine-tuning runs only",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    figures: bool = Field(
        True,
        description="the run's figures (schedule, LR finder, confusion, reliability, Grad-CAM examples; PNG + SVG); false saves 1-2 s a run on 2 CPU cores in a large grid, and keeps their CSVs",
    )
    select_on: Literal["none", "val_loss", "val_balanced_accuracy"] = "none"
    early_stopping_patience: int | None = Field(None, ge=1)
    seed: int = 0
    resume: bool = Field(False, description="continue an interrupted run in out, or keep a finished one")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_recipe(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("recipe") in FINETUNE_PRESETS:
            values = {**FINETUNE_PRESETS[values["recipe"]], **values}
        if isinstance(values, dict) and "init" not in values:
            values = {**values, "init": default_init(values.get("backbone", DEFAULT_BACKBONE))}
        return values

    @model_validator(mode="after")
    def _needs_val(self) -> FinetuneConfig:
        if self.early_stopping_patience is not None and self.select_on == "none":
            raise ValueError("early_stopping_patience needs select_on: val_loss or val_balanced_accuracy")
        if self.manifest is None and self.data and self.split is None:
            raise ValueError(
                "data needs a split section (e.g. split: {per_class: 50, test_fraction: 0.25}), or give a manifest"
            )
        return self


class InitConfig(Strict):
    """One initialisation compared by ``compare``: ``random``, ``imagenet[-v1|-v2]``, a file, or
    ``pretrain``: pretrained on the experiment's pool with the ``pretrain`` section, changed by
    this initialisation's own ``pretrain`` keys (e.g. ``{method: vicreg}``). Its own ``finetune``
    keys change how its runs decode images (colour constancy), so one experiment holds both arms."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    init: str = Field(min_length=1)
    pretrain: dict[str, Any] = Field(
        default_factory=dict,
        description="changes to the experiment's pretrain section for this initialisation (init: pretrain only)",
    )
    finetune: dict[str, Any] = Field(
        default_factory=dict,
        description="changes to the experiment's finetune section for this initialisation's runs, e.g. {colour_constancy: shades-of-gray}",
    )

    #: Keys ``compare`` sets itself in every pretraining or run, so an initialisation cannot change them.
    SET_BY_COMPARE: ClassVar[dict[str, set[str]]] = {
        "pretrain": {"data", "manifest", "data_root", "out", "backbone", "resume", "tracking"},
        "finetune": {"data", "split", "manifest", "data_root", "out", "init", "seed", "resume", "tracking"},
    }

    @model_validator(mode="after")
    def _changes_compare_allows(self) -> InitConfig:
        for section, keys in self.SET_BY_COMPARE.items():
            if clash := sorted(keys & set(getattr(self, section))):
                raise ValueError(
                    f"initialisation {self.name}: compare sets {', '.join(clash)} of every {section} itself; "
                    + ("choose the backbone in the finetune section" if "backbone" in clash else "remove them here")
                )
        return self


class CompareConfig(Strict):
    """An experiment: initialisations x seeds with the same split and protocol."""

    preset: Literal[tuple(EXPERIMENT_PRESETS)] | None = Field(
        None, description="named study design; explicit keys override it"
    )
    data: Sources = Field(default_factory=list)
    manifest: Path | None = Field(None, description="manifest from `lesionssl split`")
    data_root: Path | None = Field(
        None,
        description="the folder that now holds the manifest's images, when they moved (e.g. to node scratch); default: the root the manifest recorded",
    )
    split: SplitConfig | None = Field(None, description="how to split data when no manifest is given")
    out: Path = Path("runs/compare")
    initialisations: list[InitConfig] = Field(
        min_length=1,
        description="default: the fine-tuning section's default start (installed ImageNet weights for Lite0-2)",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    budgets: list[int] | None = Field(
        None,
        min_length=1,
        description="label-efficiency sweep: training images per class, nested, drawn anew for every seed, same test set",
    )
    selection: SelectionConfig | None = Field(
        None,
        description="simulated label-selection study: strategies pick each round's images on each initialisation's features; the manifest's labels play the expert",
    )
    protocols: list[Literal[PROTOCOLS]] = Field(
        default_factory=lambda: ["finetune"],
        min_length=1,
        description="finetune (the transfer protocol), linear (probe on frozen features), knn (k-nearest neighbours on frozen features)",
    )
    knn_k: int = Field(20, ge=1, description="neighbours of the knn protocol")
    reference: Literal["seed-isic2019"] | None = Field(
        None, description="published numbers shown next to ours in the report"
    )
    jobs: int = Field(1, ge=1, description="runs at once (one GPU each when there are GPUs)")
    shard: str | None = Field(None, description="k/n: run only the k-th of n slices (cluster job arrays)")
    pretrain: PretrainConfig | None = None
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("preset") in EXPERIMENT_PRESETS:
            values = apply_experiment_preset(values)
        if isinstance(values, dict) and "initialisations" not in values:
            init = default_init((values.get("finetune") or {}).get("backbone", DEFAULT_BACKBONE))
            values = {**values, "initialisations": [{"name": init, "init": init}]}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> CompareConfig:
        if self.manifest is None and (not self.data or self.split is None):
            raise ValueError("give either manifest, or data together with split")
        names = [i.name for i in self.initialisations]
        if len(set(names)) != len(names):
            raise ValueError(f"initialisation names must be unique, got {names}")
        if any(i.init == "pretrain" for i in self.initialisations) and self.pretrain is None:
            raise ValueError("an initialisation uses init: pretrain, so a pretrain section is required")
        for initialisation in self.initialisations:
            if initialisation.pretrain and initialisation.init != "pretrain":
                raise ValueError(f"initialisation {initialisation.name}: pretrain keys need init: pretrain")
            if initialisation.pretrain:
                self.pretrain_settings(initialisation)  # validated now, not hours later
            runs = self.finetune_settings(initialisation)
            if initialisation.init == "pretrain" and self.pretrain_settings(initialisation).colour != runs.colour:
                raise ValueError(
                    f"initialisation {initialisation.name}: pretrained with colour constancy {self.pretrain_settings(initialisation).colour_constancy} "
                    f"but fine-tuned with {runs.colour_constancy}; give both sections the same colour_constancy"
                )
        if self.budgets is not None and any(b < 1 for b in self.budgets):
            raise ValueError(f"budgets must be positive numbers of images per class, got {self.budgets}")
        if self.budgets is not None and self.selection is not None:
            raise ValueError(
                "budgets (labels per class, drawn at random) and selection (total labels, picked by strategies) are two designs: choose one"
            )
        return self

    def finetune_settings(self, initialisation: InitConfig) -> FinetuneConfig:
        """The runs of one initialisation: the experiment's finetune section with its own changes."""
        return _with_changes(self.finetune, initialisation.finetune, f"initialisations.{initialisation.name}.finetune")

    def pretrain_settings(self, initialisation: InitConfig) -> PretrainConfig:
        """The pretraining of a ``pretrain`` initialisation: the experiment's section with its own changes."""
        return _with_changes(self.pretrain, initialisation.pretrain, f"initialisations.{initialisation.name}.pretrain")


def _with_changes(section: BaseModel, changes: dict[str, Any], where: str) -> Any:
    """An experiment's section with one initialisation's own keys, validated as that section."""
    if not changes:
        return section
    return validate(type(section), {**section.model_dump(exclude_unset=True), **changes}, where)
