"""``prefalign data inspect|convert|aggregate`` end to end through ``prefalign.cli.main``."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from prefalign.cli import main
from prefalign.feedback import load_feedback, load_pairs
from prefalign.feedback.privacy import KEY_ENV

EXTERNAL = Path(__file__).resolve().parent / "fixtures" / "feedback" / "external"
LS = str(EXTERNAL / "label_studio.json")
LS_BAD = str(EXTERNAL / "label_studio_bad.json")
KEY = "a-test-key-of-at-least-16-bytes"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["data", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def spammer_panel(path: Path) -> str:
    """prefalign-format ratings: 12 items x 2 responses, four careful raters and one random one."""
    rng = random.Random(0)
    rows = []
    for i in range(12):
        for k, truth in enumerate((2 + i % 3, 7 + i % 3)):
            for rater in ("ann", "bob", "cat", "dan", "spam"):
                value = rng.randint(0, 10) if rater == "spam" else truth + rng.choice([-1, 0, 1])
                rows.append(
                    {
                        "kind": "rating",
                        "rater_id": rater,
                        "item_id": f"i{i}",
                        "prompt": f"Question {i}?",
                        "response": f"answer {k} to {i}" + " with more words" * k,
                        "value": value,
                    }
                )
    return write_jsonl(path, rows)


# ------------------------------------------------------------------------------------------- inspect


def test_inspect_label_studio_prints_report_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "inspect", LS, "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")
    )
    assert code == 0
    assert "7 records from 1 file" in out and "(label-studio)" in out
    assert "first shown won 1 of 2 (50.0%" in out
    assert "default conversion to pairs: 4 pairs" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_records"] == 7
    assert report["kinds"] == {"comparison": 2, "ranking": 2, "rating": 1, "edit": 1, "demonstration": 1}
    assert (report["n_raters"], report["n_items"], report["items_multi_rater"]) == (3, 4, 2)
    assert report["scale"] == "1-5"  # the Label Studio <Rating> default
    assert report["position"]["first"]["k"] == 1 and report["position"]["first"]["n"] == 2
    assert report["length"]["n_pairs"] == 6 and report["length"]["chars"]["k"] == 4
    assert report["duplicates"]["conversion"]["split_dropped"] == 1  # raters 7 and 9 disagree on task 11
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_inspect_skip_mode_lists_rejected_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", LS_BAD, "--on-error", "skip", "--json", str(tmp_path / "r.json"))
    assert code == 0
    assert "Rejected rows: 1" in out
    assert "line 2, field 'annotations[0].result[1].value.selected'" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_records"] == 5
    assert report["rejected"] == [
        {
            "file": LS_BAD,
            "line": 2,
            "field": "annotations[0].result[1].value.selected",
            "message": "expected 'left' or 'right', got 'middle'",
        }
    ]


def test_inspect_trl_pairs_count_as_comparisons_without_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "inspect", str(EXTERNAL / "trl.jsonl"), "--json", str(tmp_path / "r.json"))
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["kinds"] == {"comparison": 3}
    assert report["position"] is None  # TRL rows do not record which answer was shown first
    assert "no comparisons with a known display order" in out


def test_inspect_flags_the_planted_spammer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", spammer_panel(tmp_path / "f.jsonl"), "--scale", "0-10")
    assert code == 0
    spam_section = out.split("Suspected spammers")[1].split("Position bias")[0]
    assert "spam" in spam_section and "ann" not in spam_section


def test_bad_row_exits_2_naming_file_line_and_field(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["inspect"], ["convert", "-o", "unused.jsonl"], ["aggregate", "-o", "unused.jsonl"]):
        code, _, err = run(capsys, *command, LS_BAD)
        assert code == 2
        assert err.startswith(f"prefalign data {command[0]}: error: ")
        assert f"{LS_BAD}, line 2, field 'annotations[0].result[1].value.selected'" in err
    assert not Path("unused.jsonl").exists()


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "convert", LS, "-o", str(tmp_path / "pairs.txt"))
    assert code == 2 and ".jsonl, .parquet or .csv" in err
    code, _, err = run(capsys, "convert", LS, "-o", str(tmp_path / "p.jsonl"), "--scale", "1-3")
    assert code == 2 and "rater '7' of item '12', field 'value': 4 is outside the scale [1, 3]" in err
    code, _, err = run(capsys, "inspect", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such data file" in err
    with pytest.raises(SystemExit) as exc:
        main(["data", "inspect", LS, "--scale", "ten"])
    assert exc.value.code == 2


# ------------------------------------------------------------------------------------------- convert


def test_label_studio_to_dpo_ready_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "pairs.jsonl"
    code, out, _ = run(capsys, "convert", LS, "--output", str(out_file))
    assert code == 0
    assert "converted 7 records to 4 pairs" in out
    assert "duplicates merged 1, contradictions 1 (even splits dropped 1" in out
    pairs = load_pairs(out_file)
    assert [(p.prompt, p.chosen, p.rejected, p.margin) for p in pairs] == [
        (
            "Explain what a comet is.",
            "A comet is a ball of ice and dust that orbits the sun and grows a tail near it.",
            "A comet is a ball of ice and dust that orbits the sun.",
            None,
        ),
        (
            "Which opening line is best for a mystery story?",
            "Nobody noticed the extra chair at dinner.",
            "The clock stopped at midnight, and so did the music.",
            1.0,
        ),
        (
            "Which opening line is best for a mystery story?",
            "Nobody noticed the extra chair at dinner.",
            "It was a normal day.",
            2.0,
        ),
        (
            "Which opening line is best for a mystery story?",
            "The clock stopped at midnight, and so did the music.",
            "It was a normal day.",
            1.0,  # two raters agree: merged, mean margin
        ),
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_convert_writes_parquet_and_csv(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / f"pairs{suffix}"
    assert run(capsys, "convert", LS, "-o", str(out_file))[0] == 0
    assert len(load_pairs(out_file)) == 4


def test_convert_sft_and_listwise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "convert", LS, "--to", "sft", "-o", str(tmp_path / "sft.jsonl"))[0] == 0
    assert jsonl(tmp_path / "sft.jsonl") == [
        {
            "prompt": "Explain what a comet is.",
            "completion": "A comet is a ball of ice and dust that orbits the sun and grows a tail near it.",
        },
        {
            "prompt": "Write a one-line thank-you note to a neighbour.",
            "completion": "Thanks for watering my plants while I was away!",
        },
    ]
    code, out, _ = run(capsys, "convert", LS, "--to", "listwise", "-o", str(tmp_path / "lw.jsonl"))
    assert code == 0 and "filtered 5" in out  # the five records that are not rankings
    rows = jsonl(tmp_path / "lw.jsonl")
    assert [r["ranks"] for r in rows] == [[1, 2, 3], [1, 2]]
    assert rows[0]["responses"][0] == "Nobody noticed the extra chair at dinner."


def test_convert_mixed_text_and_chat_rows_into_one_loadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "pairs.jsonl"
    code, out, _ = run(
        capsys, "convert", str(EXTERNAL / "trl.jsonl"), str(EXTERNAL / "hh_rlhf.jsonl"), "-o", str(out_file)
    )
    assert code == 0 and "2 text rows written as chat messages" in out
    pairs = load_pairs(out_file)
    assert len(pairs) == 6 and all(p.is_conversational for p in pairs)
    assert pairs[0].prompt == [{"role": "user", "content": "Name a fruit that is yellow."}]
    assert pairs[0].margin == 2.0


def test_convert_skip_mode_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "rejected.jsonl"
    code, out, _ = run(
        capsys,
        "convert",
        LS_BAD,
        "-o",
        str(tmp_path / "p.jsonl"),
        "--on-error",
        "skip",
        "--report",
        str(report),
    )
    assert code == 0
    assert "rejected 1 row (kept the valid ones)" in out
    assert jsonl(report) == [
        {
            "file": LS_BAD,
            "line": 2,
            "field": "annotations[0].result[1].value.selected",
            "message": "expected 'left' or 'right', got 'middle'",
        }
    ]
    assert len(load_pairs(tmp_path / "p.jsonl")) == 3  # task 12 (rating + edit) is rejected as a whole


def test_pseudonymize_and_scrub(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_jsonl(
        tmp_path / "f.jsonl",
        [
            {
                "kind": "comparison",
                "rater_id": "alice@example.com",
                "item_id": "q1",
                "prompt": "Write to jane.doe@example.org or call +44 20 7946 0958.",
                "a": "Sure, I will e-mail jane.doe@example.org today.",
                "b": "No.",
                "winner": "a",
            },
            {
                "kind": "edit",
                "rater_id": "bob@example.com",
                "item_id": "q2",
                "prompt": "Give the support line.",
                "original": "Call us.",
                "edited": "Call us at (555) 123-4567.",
            },
        ],
    )
    monkeypatch.setenv(KEY_ENV, KEY)
    pairs_file, kept = tmp_path / "p.jsonl", tmp_path / "kept.jsonl"
    code, out, _ = run(
        capsys,
        "convert",
        src,
        "-o",
        str(pairs_file),
        "--pseudonymize",
        "--scrub",
        "--keep-feedback",
        str(kept),
    )
    assert code == 0
    assert "rater ids replaced by keyed pseudonyms" in out and "phone numbers scrubbed" in out
    written = pairs_file.read_text() + kept.read_text()
    for secret in ("alice@example.com", "bob@example.com", "jane.doe@example.org", "7946 0958", "123-4567"):
        assert secret not in written
    assert "[EMAIL]" in written and "[PHONE]" in written
    records = load_feedback(kept)
    assert all(r.rater_id.startswith("r_") and len(r.rater_id) == 18 for r in records)
    assert load_pairs(pairs_file)[0].prompt == "Write to [EMAIL] or call [PHONE]."

    # --pseudonym-key alone pseudonymises too: every rater in the printed table is a pseudonym.
    code, out, _ = run(capsys, "aggregate", LS, "-o", str(tmp_path / "c.jsonl"), "--pseudonym-key", KEY)
    assert code == 0
    table = out.split("raters:\n")[1].splitlines()[1:6]  # header, then the 5 rater rows
    assert len(table) == 5 and all(line.split()[0].startswith("r_") for line in table)

    monkeypatch.delenv(KEY_ENV)
    code, _, err = run(capsys, "convert", src, "-o", str(tmp_path / "q.jsonl"), "--pseudonymize")
    assert code == 2 and KEY_ENV in err
    assert not (tmp_path / "q.jsonl").exists()
    code, _, err = run(capsys, "convert", src, "-o", str(tmp_path / "q.jsonl"), "--pseudonym-key", "short")
    assert code == 2 and "at least 16" in err


# ----------------------------------------------------------------------------------------- aggregate


def test_aggregate_label_studio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file, scores = tmp_path / "c.jsonl", tmp_path / "scores.jsonl"
    code, out, _ = run(capsys, "aggregate", LS, "-o", str(out_file), "--scores", str(scores))
    assert code == 0
    assert "comparisons: bt consensus over 1 item -> 0 pairs (ties 1" in out  # 1 vote each way
    assert "rankings: plackett_luce consensus over 1 item -> 1 pair " in out
    (pair,) = load_pairs(out_file)
    assert (pair.chosen, pair.rejected) == (
        "Nobody noticed the extra chair at dinner.",
        "It was a normal day.",
    )
    rows = jsonl(scores)
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"rating", "comparison", "ranking"}
    ranking = {r["response"]: r["score"] for r in rows if r["kind"] == "ranking"}
    assert pair.margin == pytest.approx(ranking[pair.chosen] - ranking[pair.rejected])
    assert (
        ranking[pair.chosen]
        > ranking["The clock stopped at midnight, and so did the music."]
        > ranking[pair.rejected]
    )


def test_aggregate_ratings_drops_the_spammer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = spammer_panel(tmp_path / "f.jsonl")
    out_file, kept = tmp_path / "c.jsonl", tmp_path / "kept.jsonl"
    code, out, _ = run(
        capsys,
        "aggregate",
        src,
        "-o",
        str(out_file),
        "--scale",
        "0-10",
        "--drop-spammers",
        "--keep-feedback",
        str(kept),
    )
    assert code == 0
    table = out.split("raters:")[1]
    spam_line = next(line for line in table.splitlines() if line.strip().startswith("spam "))
    assert "YES" in spam_line and "dropped" in spam_line
    assert "dropped the ratings of 1 suspected spammer(s): spam" in out
    pairs = load_pairs(out_file)
    assert len(pairs) == 12
    # Every item: the longer answer has the higher truth (7-9 vs 2-4), so it is chosen with a margin of about 5.
    assert all("more words" in p.chosen and 3 <= p.margin <= 7 for p in pairs)
    assert {r.rater_id for r in load_feedback(kept)} == {"ann", "bob", "cat", "dan"}


@pytest.mark.parametrize("method", ["mean", "median", "dawid_skene"])
def test_aggregate_rating_methods(method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = spammer_panel(tmp_path / "f.jsonl")
    code, out, _ = run(
        capsys, "aggregate", src, "-o", str(tmp_path / "c.jsonl"), "--scale", "0-10", "--method", method
    )
    assert code == 0 and f"ratings: {method} consensus over 12 items -> 12 pairs" in out


def test_aggregate_dawid_skene_refuses_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = spammer_panel(tmp_path / "f.jsonl")
    code, _, err = run(
        capsys,
        "aggregate",
        src,
        "-o",
        str(tmp_path / "c.jsonl"),
        "--scale",
        "0-10",
        "--method",
        "dawid_skene",
        "--calibrate",
        "zscore",
    )
    assert code == 2 and "calibrate" in err


def test_data_help_is_light() -> None:
    # Building the parser must not import numpy or torch (``prefalign --help`` stays instant).
    code = "import sys; from prefalign.cli import build_parser; build_parser(); print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_format_choices_follow_the_importers() -> None:
    from prefalign.feedback.commands import FORMAT_CHOICES
    from prefalign.feedback.importers import FORMATS

    assert FORMAT_CHOICES == ("auto", *FORMATS)
