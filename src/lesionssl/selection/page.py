"""The expert's page of a selection: one thumbnail per picked image with a class menu, and a button
that downloads the filled-in CSV (the same columns as the CSV ``select`` wrote), ready for
``lesionssl split --labels``. Self-contained: thumbnails are embedded, nothing is fetched."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image

from lesionssl.io import write_text

THUMBNAIL = 192

_SCRIPT = """
function csvField(value) {
  value = String(value);
  return /[",\\n]/.test(value) ? '"' + value.replace(/"/g, '""') + '"' : value;
}
function download() {
  const lines = [COLUMNS.join(',')];
  ROWS.forEach((row, i) => {
    row.label = document.getElementById('label-' + i).value;
    lines.push(COLUMNS.map(c => csvField(row[c])).join(','));
  });
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([lines.join('\\n') + '\\n'], {type: 'text/csv'}));
  link.download = FILE;
  link.click();
}
function count() {
  const done = ROWS.filter((_, i) => document.getElementById('label-' + i).value).length;
  document.getElementById('done').textContent = done + ' of ' + ROWS.length + ' labelled';
}
"""


def thumbnail(path: str) -> str:
    """A JPEG data URI of the image, at most ``THUMBNAIL`` pixels a side."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_page(path: Path, request: pd.DataFrame, classes: list[str], title: str) -> Path:
    """Write the page for ``request`` (a selection table) and return its path."""
    options = '<option value="">?</option>' + "".join(
        f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in classes
    )
    cards = []
    for i, row in enumerate(request.itertuples(index=False)):
        cards.append(
            f'<figure><img src="{thumbnail(row.path)}" alt="{html.escape(row.image)}">'
            f"<figcaption>{row.order}. {html.escape(row.image)}<br>"
            f'<select id="label-{i}" onchange="count()">{options}</select></figcaption></figure>'
        )
    rows = json.dumps(request.astype(str).to_dict(orient="records")).replace("</", "<\\/")  # no early </script>
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
main {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: {THUMBNAIL}px; font-size: 12px; }}
img {{ width: {THUMBNAIL}px; height: {THUMBNAIL}px; object-fit: contain; background: #eee; }}
select {{ width: 100%; margin-top: 4px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Choose each image's class (leave <b>?</b> when unsure: that image stays unlabelled), then
<button onclick="download()">download the filled-in CSV</button> <span id="done">0 of {len(request)} labelled</span>.
Read it back with <code>lesionssl split --labels {html.escape(Path(path).with_suffix(".csv").name)} --out next.csv</code>.
Classes: {html.escape(", ".join(classes))}.</p>
<main>
{chr(10).join(cards)}
</main>
<script>
const COLUMNS = {json.dumps(list(request.columns))};
const ROWS = {rows};
const FILE = {json.dumps(Path(path).with_suffix(".csv").name)};
{_SCRIPT}
</script></body></html>
"""
    write_text(path, page)
    return path
