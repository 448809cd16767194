"""The version has one source, ``medfcn/__init__.py``: the package metadata (pyproject's dynamic version), ``medfcn
--version``, the manifest, a new model card, the report and a DICOM SEG's software version read it, and the
changelog's newest section names it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from medfcn import __version__
from medfcn.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "medfcn.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_every_output_says_the_version(capsys, tmp_path):
    import pytest

    from medfcn.batch.manifest import Manifest
    from medfcn.dicom.seg import Algorithm
    from medfcn.evaluation.report import render_html
    from medfcn.evaluation.results import Evaluation
    from medfcn.model.card import ModelCard

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"medfcn {__version__}"
    assert Manifest(tmp_path / "m.json", {}, "cpu").to_dict()["medfcn_version"] == __version__
    assert ModelCard().medfcn_version == __version__
    assert f"medfcn {__version__}," in render_html(Evaluation(rows=[]))
    assert Algorithm().medfcn_version == __version__


def test_the_changelog_describes_this_version():
    sections = re.findall(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), flags=re.M)
    assert sections[0] == __version__
