"""Every option of ``train --help`` has its line in benchmarks/README.md: a benchmark or the paper behind it."""

import re
from pathlib import Path

from napari_labelreg.cli import build_parser

RECORD = Path(__file__).resolve().parents[1] / "benchmarks" / "README.md"


def test_every_train_option_is_backed_in_the_benchmark_record():
    text = RECORD.read_text(encoding="utf-8")
    table = text[text.index("## What earned each option of `train --help`"):]
    table = table[: table.index("\n## ", 3)]
    listed = set(re.findall(r"`(--[a-z-]+)", table))
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {s for a in train._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    options -= {"--no-prefilter"}  # the negative of --prefilter
    assert not options - listed, f"train options without a line in {RECORD.name}: {sorted(options - listed)}"
    assert not {"--members", "--elastic", "--cycles", "--cross-subject"} & options  # deleted by their own figures
