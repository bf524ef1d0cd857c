"""A fine-tuning run as users get it (``lesionssl finetune``, the API, each ``compare`` run): the
finetune stage, then what deploy adds before the run is marked finished, the Grad-CAM examples
and the model card. It lives here, above both, so that neither stage imports the other both ways.
"""

from __future__ import annotations

from typing import Any

from lesionssl.config import FinetuneConfig
from lesionssl.deploy.card import write_card
from lesionssl.deploy.gradcam import write_examples
from lesionssl.finetuning.run import FinishedRun
from lesionssl.finetuning.run import finetune as finetune_stage


def document(run: FinishedRun) -> None:
    """The run's examples (when it draws figures) and its model card."""
    if run.config.figures:
        write_examples(
            run.out,
            run.module,
            run.images,
            run.test,
            run.labels,
            run.probs,
            run.result.classes,
            run.result.calibration.temperature,
        )
    write_card(run.out, run.result)


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Run the transfer protocol and document the run; return the test metrics."""
    return finetune_stage(config, finish=document)
