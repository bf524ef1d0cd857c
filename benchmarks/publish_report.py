"""Copy a ``compare`` report into ``docs/`` without the dataset's images.

The report's figures of results (curves, confusion matrices, reliability) are copied. Two kinds
of figure show the images themselves: the augmentation gallery and each run's Grad-CAM
``examples.png``. The shared data's licences keep images out of the repository, so their links
become a line that says where ``lesionssl report`` draws them.

    python benchmarks/publish_report.py runs/shared-new-site docs/new-site
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

#: Figures drawn from the dataset's images, by file name.
SHOWS_IMAGES = {"augmentations.png", "examples.png"}
IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def publish(source: Path, target: Path) -> list[str]:
    """Write ``target/report.md`` and the figures it links; return the links left out."""
    text = (source / "report.md").read_text()
    left_out: list[str] = []

    def keep_or_drop(match: re.Match) -> str:
        alt, link = match.group(1), match.group(2)
        if Path(link).name not in SHOWS_IMAGES:
            (target / link).parent.mkdir(parents=True, exist_ok=True)
            if (source / link).resolve() != (target / link).resolve():
                shutil.copyfile(source / link, target / link)
            return match.group(0)
        left_out.append(link)
        return (
            f"*{alt}: left out of the repository (it shows the dataset's images, whose licence keeps "
            f"them out); `lesionssl report` draws it as `{link}` in the experiment's folder.*"
        )

    target.mkdir(parents=True, exist_ok=True)
    published = IMAGE_LINK.sub(keep_or_drop, text)
    (target / "report.md").write_text(published)
    for link in left_out:
        (target / link).unlink(missing_ok=True)  # an earlier copy that still holds it
    return left_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the experiment folder (report.md, figures/)")
    parser.add_argument("target", type=Path, help="the docs folder to write")
    args = parser.parse_args()
    for link in publish(args.source, args.target):
        print(f"left out: {link}")


if __name__ == "__main__":
    main()
