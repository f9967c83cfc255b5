"""A small real evaluation for the report tests: a flow trained for a few steps on 8x8 images, scored on
its own images, on brighter ones and through a gate; and the page's exact metric values."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from cli_helpers import TRAIN_SMALL, image_npz, run


def make_scores(folder):
    """``(score file, model)`` with groups ``in``, ``ood`` (brighter images) and ``gated``."""
    image_npz(folder / "in.npz", n=48, seed=0, bright=0.3)
    image_npz(folder / "ood.npz", n=40, seed=1, bright=0.7)
    model, scores = folder / "m.pt", folder / "s.h5"
    run("train", "--data", folder / "in.npz", "--out", model, *TRAIN_SMALL, "--max-steps", "3")
    run("score", folder / "in.npz", "--model", model, "--out", scores, "--name", "in", "--quiet")
    run("score", folder / "ood.npz", "--model", model, "--out", scores, "--name", "ood", "--quiet")
    run("score", folder / "ood.npz", "--model", model, "--out", scores, "--name", "gated", "--reference",
        f"{scores}:in", "--quiet")
    return scores, model


class _Cells(HTMLParser):
    """Collects ``{(score, group): {metric: value}}`` from the rows of the metrics table."""

    def __init__(self):
        super().__init__()
        self.row, self.values, self.intervals = None, {}, {}
        self.metric = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-score" in a:
            self.row = (a["data-score"], a["data-group"])
            self.values[self.row], self.intervals[self.row] = {}, {}
        elif tag == "td" and "data-metric" in a and self.row:
            self.metric = a["data-metric"]
            self.values[self.row][self.metric] = json.loads(a["data-value"])
        elif tag == "span" and a.get("class") == "ci" and self.row and self.metric:
            self.intervals[self.row][self.metric] = [json.loads(a["data-lo"]), json.loads(a["data-hi"])]


def page_metrics(html: str) -> tuple[dict, dict]:
    """The exact metric values and intervals that the page's metrics table carries."""
    parser = _Cells()
    parser.feed(html)
    return parser.values, parser.intervals
