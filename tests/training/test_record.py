"""A model card's training record names no path of the machine it was made on (medfcn.training.record.publishable):
paths inside the repository or the working folder relative to it, others as file names, free text untouched."""

from __future__ import annotations

import os
import shlex

from medfcn.model.checkpoint import load_model
from medfcn.training.record import publishable


def absolute_strings(value) -> list[str]:
    """Every absolute path in a record: its strings and the words of its command."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (_command(v) if k == "command" else absolute_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in absolute_strings(v)]
    return [value] if isinstance(value, str) and os.path.isabs(value) else []


def _command(text: str) -> list[str]:
    return [w.partition("=")[2] or w for w in shlex.split(text) if os.path.isabs(w.partition("=")[2] or w)]


def test_paths_become_relative_or_file_names(tmp_path):
    repo = tmp_path / "repo"
    record = {
        "command": shlex.join(
            [
                "medfcn",
                "train",
                "--images",
                str(repo / "data" / "images"),
                "--labels=/elsewhere/labels",
                "-o",
                "/home/someone/runs/model.safetensors",
                "--description",
                "/ on purpose",
                "--pairs",
                "pairs.csv",
            ]
        ),
        "init": {"path": "/home/someone/start.safetensors", "sha256": "ab" * 32},
        "settings": {
            "images": str(repo / "data" / "images"),
            "labels": "/elsewhere/labels",
            "pairs": "pairs.csv",
            "description": "/ on purpose",
            "lr": 0.001,
            "axes": [0, 1, 2],
        },
        "data": [{"case": "a", "image": "a.nii.gz", "label": "a.nii.gz"}],
    }
    out = publishable(record, roots=[repo])
    assert shlex.split(out["command"]) == [
        "medfcn",
        "train",
        "--images",
        "data/images",
        "--labels=labels",
        "-o",
        "model.safetensors",
        "--description",
        "/ on purpose",
        "--pairs",
        "pairs.csv",
    ]
    assert out["init"] == {"path": "start.safetensors", "sha256": "ab" * 32}
    assert out["settings"] == {**record["settings"], "images": "data/images", "labels": "labels"}
    assert out["data"] == record["data"] and absolute_strings(out) == ["/ on purpose"] * 2  # free text kept
    assert record["init"]["path"].startswith("/")  # the record given is not changed


def test_the_bundled_card_made_publishable_names_no_path_of_its_machine():
    training = load_model().card.training
    out = publishable(training)
    assert absolute_strings(out) == []
    assert out["data_sha256"] == training["data_sha256"] and out["init"]["sha256"] == training["init"]["sha256"]
