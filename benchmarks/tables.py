"""Turn the benchmarks' JSON lines into the Markdown tables of BENCHMARKS.md.

python benchmarks/tables.py results/*.jsonl
"""

from __future__ import annotations

import json
import sys

COLUMNS = {
    "pretrain": [
        ("images", "image set"),
        ("size", "px"),
        ("lesionssl_pairs_per_s", "lesionssl pairs/s"),
        ("baseline_pairs_per_s", "baseline pairs/s"),
        ("ratio", "ratio"),
        ("lesionssl_model_only_pairs_per_s", "model only pairs/s"),
        ("data_path_efficiency", "end to end / model only"),
        ("ratio_first_epoch", "ratio incl. store build"),
        ("lesionssl_peak_rss_mb", "lesionssl peak RSS MB"),
        ("baseline_peak_rss_mb", "baseline peak RSS MB"),
    ],
    "finetune": [
        ("images", "image set"),
        ("size", "px"),
        ("lesionssl_img_per_s", "lesionssl img/s"),
        ("baseline_img_per_s", "baseline img/s"),
        ("ratio", "ratio"),
        ("lesionssl_model_only_img_per_s", "model only img/s"),
        ("data_path_efficiency", "end to end / model only"),
        ("lesionssl_peak_rss_mb", "lesionssl peak RSS MB"),
        ("baseline_peak_rss_mb", "baseline peak RSS MB"),
    ],
    "eval": [
        ("images", "image set"),
        ("eval_images", "images"),
        ("size", "px"),
        ("lesionssl_s", "lesionssl s"),
        ("baseline_s", "baseline s"),
        ("ratio", "ratio"),
        ("lesionssl_img_per_s", "lesionssl img/s"),
        ("lesionssl_model_only_img_per_s", "model only img/s"),
        ("lesionssl_store_build_s", "store build s (once)"),
    ],
    "scaling_epoch": [
        ("images", "images"),
        ("size", "px"),
        ("steps", "steps"),
        ("epoch_s", "epoch s"),
        ("pairs_per_s", "pairs/s"),
        ("store_build_s", "store build s (once)"),
    ],
    "scaling_jobs": [
        ("jobs", "--jobs"),
        ("finetune_runs", "fine-tunes"),
        ("finetune_phase_s", "wall s"),
        ("cpus", "CPU threads"),
    ],
    "data_path": [
        ("images", "image set"),
        ("size", "px"),
        ("device", "device"),
        ("workers", "workers"),
        ("loader_pairs_per_s", "store reads pairs/s"),
        ("augment_pairs_per_s", "augmentation pairs/s"),
        ("augment_ms_per_batch", "augmentation ms / batch"),
    ],
}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


def _records(paths: list[str]) -> list[dict]:
    records = []
    for path in paths:
        for line in open(path):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # progress or log lines mixed into the output
    return records


def main() -> None:
    records = _records(sys.argv[1:])
    for bench, columns in COLUMNS.items():
        rows = [r for r in records if r.get("bench") == bench]
        if not rows:
            continue
        print(
            f"\n{bench} ({rows[0].get('device', '')}, {rows[0].get('backbone', '')} {rows[0].get('precision', '')})\n"
        )
        print("| " + " | ".join(title for _, title in columns) + " |")
        print("|" + "---|" * len(columns))
        for r in rows:
            print("| " + " | ".join(_cell(r.get(key, "")) for key, _ in columns) + " |")


if __name__ == "__main__":
    main()
