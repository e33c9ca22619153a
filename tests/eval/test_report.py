"""The report's frontier chart: one line per method, points in KL order, non-finite points skipped."""

from __future__ import annotations

import base64

from prefalign.eval.report import frontier_png


def test_frontier_png_is_a_png_data_uri_and_tolerates_missing_points() -> None:
    uri = frontier_png(
        {"dpo": [(2.5, 0.56, "0.1"), (1.0, 0.45, "0.3")], "ppo": [(float("nan"), 0.7, "0.05")]},
        title="gold vs KL",
        xlabel="KL",
        ylabel="VADER",
        baseline=("base", 0.3),
    )
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    assert base64.b64decode(uri[len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
