"""``lesionssl serve``: a local web page for one fine-tuned model, built with Gradio (the
optional ``[serve]`` extra).

A user drops a dermoscopic image and sees the class probabilities (temperature-scaled), the
malignant probability against the operating point chosen on the validation split, and the
Grad-CAM map of the predicted class. Nothing leaves the machine: the page binds to 127.0.0.1 by
default, Gradio's analytics are off and the theme uses the system's fonts (no web fonts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lesionssl.data.images import ImageLoadError
from lesionssl.data.store import decode_for_store, stored_size
from lesionssl.deploy.gradcam import grad_cam, panel
from lesionssl.deploy.model import load_model
from lesionssl.errors import LesionSSLError
from lesionssl.evaluate.calibration import malignant_probability
from lesionssl.finetuning.module import ClassifierModule
from lesionssl.records import ModelRecord

DISCLAIMER = "Research use only: not a medical device and no diagnosis. Every output needs a clinician's judgement."


@dataclass(frozen=True)
class Analysis:
    """What the page shows for one image."""

    probabilities: dict[str, float]
    decision: str  # Markdown: P(malignant) against the operating point
    picture: Image.Image  # the image as the model sees it | its Grad-CAM map


def decision_text(probs: np.ndarray, record: ModelRecord) -> str:
    """P(malignant) in words, against the model's operating point."""
    if not record.malignant_classes:
        return f"The model names no malignant class among its classes ({', '.join(record.classes)}): fine-tune with --malignant-classes to get P(malignant)."
    p = float(malignant_probability(probs[None], record.classes, record.malignant_classes)[0])
    text = f"**P(malignant) = {p:.3f}** (the sum over {', '.join(record.malignant_classes)})."
    if record.threshold is None:
        return text + " The model has no operating point (it was fine-tuned without a validation split)."
    side = "**at or above**" if p >= record.threshold else "**below**"
    return (
        text
        + f" That is {side} the operating point {record.threshold:.3f}, chosen on the validation split for sensitivity {record.target_sensitivity:g}."
    )


class Analyser:
    """Loads a model once and analyses uploaded image files with it."""

    def __init__(self, model_dir: Path) -> None:
        self.module: ClassifierModule
        self.module, self.record = load_model(model_dir)
        self.size = stored_size(self.record.image_size, self.record.store_margin)

    def __call__(self, path: str | os.PathLike) -> Analysis:
        """Raises :class:`~lesionssl.data.images.ImageLoadError` for a file that is no readable image."""
        image = decode_for_store(str(path), self.size, self.record.colour)
        heat = grad_cam(self.module, image[None], self.record.temperature)
        probs = heat.probabilities[0]
        return Analysis(
            dict(zip(self.record.classes, map(float, probs))),
            decision_text(probs, self.record),
            panel(image, heat.maps[0]),
        )


def build_app(model_dir: Path):
    """The Gradio page for the model in ``model_dir``."""
    try:
        import gradio as gr
    except ImportError:
        raise LesionSSLError("`lesionssl serve` needs Gradio: pip install 'lesionssl[serve]'") from None
    analyser = Analyser(model_dir)
    record = analyser.record

    def analyse(path: str | None):
        if path is None:
            return None, "", None
        try:
            result = analyser(path)
        except ImageLoadError as exc:
            raise gr.Error(f"{Path(path).name}: {exc}") from None
        return result.probabilities, result.decision, result.picture

    tta = (
        f" `lesionssl predict` averages {record.tta} augmented views as well; this page shows the plain view."
        if record.tta
        else ""
    )
    with gr.Blocks(title="lesionssl", analytics_enabled=False) as app:
        gr.Markdown(
            f"## lesionssl: {record.architecture} ({record.init or 'fine-tuned'}, seed {record.seed})\n{DISCLAIMER}"
        )
        with gr.Row():
            upload = gr.File(label="Dermoscopic image", file_types=["image"], type="filepath", elem_id="upload")
            with gr.Column():
                label = gr.Label(
                    label="Class probabilities (temperature-scaled)",
                    num_top_classes=len(record.classes),
                    elem_id="probabilities",
                )
                decision = gr.Markdown(elem_id="decision")
        picture = gr.Image(
            label="The image as the model sees it, and its Grad-CAM map for the predicted class",
            type="pil",
            interactive=False,
            elem_id="gradcam",
        )
        gr.Markdown(f"Grad-CAM shows where the model looks, not why.{tta}")
        upload.change(analyse, inputs=upload, outputs=[label, decision, picture])
    return app


def serve(model_dir: Path, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the page until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(model_dir)
    import gradio as gr

    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app.launch(server_name=host, server_port=port, share=False, theme=theme, show_error=True, quiet=False)
