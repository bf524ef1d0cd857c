"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML file.

The HTML embeds its figures as base64 PNGs and its style inline, so it opens offline in any
browser; a tiny script marks ``<body data-images-loaded="N">`` once the images have decoded,
which the tests read through headless Chromium.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-size:0.9em}h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
"""
SCRIPT = """
window.addEventListener('load',function(){var n=0;document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});
document.body.setAttribute('data-images-loaded',String(n));document.body.setAttribute('data-images-total',String(document.images.length));});
"""


@dataclass
class Document:
    """Blocks in order: ``("h", level, text)``, ``("p", text)``, ``("table", frame)``, ``("img", path, caption)``."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def image(self, path: Path, caption: str) -> None:
        if Path(path).is_file():
            self.blocks.append(("img", Path(path), caption))

    def to_markdown(self, base: Path) -> str:
        lines = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                lines += ["#" * block[1] + " " + block[2], ""]
            elif kind == "p":
                lines += [block[1], ""]
            elif kind == "table":
                lines += [_markdown_table(block[1]), ""]
            else:
                lines += [f"![{block[2]}]({block[1].relative_to(base)})", ""]
        return "\n".join(lines)

    def to_html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "table":
                body.append(block[1].to_html(index=False, border=0, escape=True))
            else:
                data = base64.b64encode(block[1].read_bytes()).decode()
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}"><figcaption>{html.escape(block[2])}</figcaption></figure>'
                )
        return f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>{"".join(body)}</body></html>'


def _inline(text: str) -> str:
    """Escape, then render Markdown's **bold** and `code` (the only inline marks we emit)."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *lines])
