"""``compare``'s simulated label-selection study (``selection:`` in its YAML).

The expert is simulated by the manifest's own labels. From the experiment's manifest a *selection
pool* is made once (``selection/pool.csv``): its training labels are set aside (``train`` becomes
``unlabelled``, labels unused) and the pool images that have no label at all become ``excluded``,
since the simulated expert could not reveal them. Validation, test and external images are as in
the manifest, so every strategy is judged on one test set and chooses hyperparameters on one
validation set (whose labels are not counted in the budget).

Per initialisation, strategy and seed, the budgets are labelled in rounds, as in practice: round
``r`` picks ``budget_r - budget_{r-1}`` images with :func:`lesionssl.selection.select.select` on
that initialisation's features (random weights of that seed, or the pretrained backbone), every
earlier pick excluded; the revealed labels make that budget's manifest (``split --labels``).
Everything is written under ``selection/<initialisation>/<strategy>/seed<k>/`` and reused when
the experiment resumes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lesionssl.config import CompareConfig, SelectConfig
from lesionssl.data.split import read_manifest, recorded_spec, write_manifest
from lesionssl.io import file_lock, write_csv
from lesionssl.layout import ExperimentFolder
from lesionssl.progress import console
from lesionssl.selection.labels import apply_labels
from lesionssl.selection.select import POOL_SPLITS, select


@dataclass(frozen=True)
class Draw:
    """The labels of a run: its manifest and seed, the budget (per class, or in total when a
    ``strategy`` picked the images) and, for a selection, the initialisation whose features picked them."""

    manifest: Path
    seed: int
    budget: int | None = None
    strategy: str | None = None
    features: str | None = None

    def serves(self, initialisation: str) -> bool:
        """Random draws serve every initialisation; a selection serves the one that made it."""
        return self.features is None or self.features == initialisation


def selection_pool(manifest: Path, folder: Path, data_root: Path | None = None) -> Path:
    """``folder/pool.csv``: the manifest with its training labels set aside and unlabelled pool
    images excluded (the simulated expert cannot label them)."""
    target = folder / "pool.csv"
    if target.is_file():
        return target
    base = read_manifest(manifest, data_root=data_root)
    table = base.table.copy()
    in_pool = table["split"].isin(POOL_SPLITS)
    table.loc[in_pool, "split"] = "unlabelled"
    table.loc[in_pool & (table["label"] == ""), "split"] = "excluded"
    write_manifest(table, target, recorded_spec(base), base.classes, [str(manifest)])
    return target


def reveal(request: Path, pool: pd.DataFrame, earlier: Path | None, target: Path) -> Path:
    """The simulated expert: the request's images with their manifest labels, after every
    image labelled in earlier rounds (``earlier``)."""
    picked = pd.read_csv(request, dtype=str, keep_default_na=False)
    picked["label"] = pool.loc[picked["image"], "label"].to_numpy()
    if earlier is not None:
        picked = pd.concat([pd.read_csv(earlier, dtype=str, keep_default_na=False), picked], ignore_index=True)
    write_csv(target, picked)
    return target


def selection_draws(config: CompareConfig, manifest: Path, pretrained: dict[str, Path]) -> list[Draw]:
    """Every (initialisation, strategy, budget, seed) manifest of the study, made once."""
    out = Path(config.out) / "selection"
    out.mkdir(parents=True, exist_ok=True)
    draws = []
    with file_lock(out / ".lock"):  # shards started together select once
        pool_manifest = selection_pool(manifest, out, config.data_root)
        pool = read_manifest(pool_manifest).table.set_index("image")
        for initialisation, strategy, seed in itertools.product(
            config.initialisations, config.selection.strategies, config.seeds
        ):
            init = str(pretrained[initialisation.name]) if initialisation.init == "pretrain" else initialisation.init
            runs = config.finetune_settings(initialisation)  # its features are seen as its runs see images
            folder = out / initialisation.name / strategy / f"seed{seed}"
            requests: list[Path] = []
            labelled = None
            for budget in config.selection.budgets:  # rounds: each keeps the earlier picks
                request, target = folder / f"b{budget}-to_label.csv", folder / f"b{budget}.csv"
                if not target.is_file():
                    console.print(
                        f"selecting {budget} labels: {initialisation.name} features, {strategy}, seed {seed}",
                        markup=False,
                    )
                    if not request.is_file():
                        select(
                            SelectConfig(
                                manifest=pool_manifest,
                                budget=budget - (0 if labelled is None else len(pd.read_csv(labelled))),
                                strategy=strategy,
                                backbone=runs.backbone,
                                init=init,
                                image_size=runs.image_size,
                                store_margin=runs.store_margin,
                                normalize=runs.normalize,
                                colour_constancy=runs.colour_constancy,
                                colour_constancy_p=runs.colour_constancy_p,
                                exclude=requests,
                                seed=seed,
                                out=request,
                                cache=ExperimentFolder(config.out).features,
                            )
                        )
                    apply_labels(
                        reveal(request, pool, labelled, folder / f"b{budget}-labelled.csv"), pool_manifest, target
                    )
                labelled = folder / f"b{budget}-labelled.csv"
                requests.append(request)
                draws.append(Draw(target, seed, budget, strategy, initialisation.name))
    return draws
