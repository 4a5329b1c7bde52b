"""Fuzz the command lines and the split-file reader: any input is accepted or refused with a message that names
the flag (or the field), never a traceback."""

import contextlib
import dataclasses
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastral import run as run_cli
from fastral import train as train_cli
from fastral.al.presets import RalisConfig
from fastral.data import ALSplits

settings.register_profile("fastral-cli", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NUMBERS = st.sampled_from(
    ["0", "1", "2", "8", "16", "64", "0.5", "-1", "2.5", "1e9", "4294967296", "nan", "inf", "-inf", "abc", "", "0x10"]
)
RUN_FLAGS = [
    "--" + f.name.replace("_", "-") for f in dataclasses.fields(RalisConfig) if f.metadata.get("cli", True)
] + ["--threads", "--policy", "--preset", "--dataset"]
TRAIN_FLAGS = [
    "--epochs",
    "--patience",
    "--batch-size",
    "--eval-batch-size",
    "--lr",
    "--momentum",
    "--weight-decay",
    "--grad-clip",
    "--dropout",
    "--scale",
    "--seed",
    "--streets-seed",
    "--crop",
    "--threads",
    "--max-train-images",
    "--max-val-images",
    "--width",
]


def command_line(flags):
    flag = st.sampled_from(flags)
    return st.lists(st.tuples(flag, st.lists(NUMBERS, min_size=0, max_size=3)), max_size=4).map(
        lambda pairs: [tok for f, vals in pairs for tok in (f, *vals)]
    )


def parse_or_refuse(main, argv) -> bool:
    """``main(argv)`` up to the point where work would start: True if accepted; a refusal must be argparse's
    exit code 2 with a message naming an argument (or an unrecognised one)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(argv)
    except SystemExit as exc:
        message = err.getvalue()
        assert exc.code == 2 and ("error: argument " in message or "error: unrecognized arguments" in message), message
        return False
    return True


def train_checks(argv):
    """fastral.train up to its argument checks (the point where loading data would start)."""
    p = train_cli.parser()
    train_cli.check_args(train_cli.apply_dataset_defaults(p.parse_args(argv)), p)


@settings(settings.get_profile("fastral-cli"))
@given(command_line(RUN_FLAGS))
def test_run_arguments_are_accepted_or_refused_by_name(argv):
    parse_or_refuse(run_cli.main, [*argv, "--print-config"])


@settings(settings.get_profile("fastral-cli"))
@given(command_line(TRAIN_FLAGS))
def test_train_arguments_are_accepted_or_refused_by_name(argv):
    parse_or_refuse(train_checks, argv)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


DAMAGED_FIELDS = [
    ("format",),
    ("dataset",),
    ("seed",),
    ("d_s_kl",),
    ("sets",),
    ("sets", "d_t"),
    ("sets", "d_t", "indices"),
    ("sets", "d_t", "files"),
    ("sets", "d_v", "split"),
]


@st.composite
def split_documents(draw):
    """Mostly well-formed split files with one field replaced by arbitrary JSON, sometimes pure noise."""
    sets = {
        name: {"split": "train", "indices": [i], "files": [f"f{i}"]}
        for i, name in enumerate(("d_s", "d_t", "d_r", "d_v", "test"))
    }
    doc = {
        "format": "fastral-al-splits/1",
        "dataset": "streets",
        "seed": 0,
        "d_s_kl": 0.1,
        "class_distribution": {},
        "sets": sets,
    }
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    path = draw(st.sampled_from(DAMAGED_FIELDS))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(JSON)
    return doc


@settings(max_examples=300, deadline=None)
@given(split_documents())
def test_split_files_load_or_fail_with_a_value_error(doc):
    with tempfile.TemporaryDirectory() as folder:
        _load_or_refuse(Path(folder) / "splits.json", doc)


def _load_or_refuse(path: Path, doc) -> None:
    path.write_text(json.dumps(doc))
    try:
        ALSplits.load(path)
    except ValueError as exc:
        assert str(exc).startswith(f"split file '{path}': ") or "cannot read split file" in str(exc)
