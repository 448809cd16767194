"""Distributed batch runs on real Dask clusters of worker processes: the same outputs and manifest as a local run.

``workers=2`` starts a ``LocalCluster`` inside :func:`run_batch`; ``scheduler=`` joins a cluster started here, the
way ``dask scheduler`` / ``dask worker`` would be joined, so the test can also ask its workers what they hold.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from medfcn.batch.cluster import ClusterSettings, loaded_models
from medfcn.batch.manifest import Status
from medfcn.batch.run import run_batch
from medfcn.errors import UsageError
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import partial_files, read_labels, write_cases

pytestmark = pytest.mark.slow  # every test here starts a Dask cluster of real worker processes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    write_cases(folder, 5)
    (folder / "broken.nii.gz").write_bytes(b"not a scan")
    return folder


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, model_file, inputs):
    out = tmp_path_factory.mktemp("local")
    return out, run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)


def comparable(manifest) -> list[tuple]:
    """What must agree between two runs: case, input, status, error, shape, spacing, device, output name."""
    return [
        (c.case, c.input, c.status, c.error, c.shape, c.spacing, c.device, c.output and Path(c.output).name)
        for c in manifest.cases
    ]


def assert_same_as_local(out: Path, manifest, local_run) -> None:
    local_out, local = local_run
    assert comparable(manifest) == comparable(local)
    assert manifest.exit_code == local.exit_code == 1
    for entry in local.cases:
        if entry.status == Status.OK:
            labels = read_labels(out / f"{entry.case}.nii.gz")
            assert np.array_equal(labels, read_labels(entry.output))
            assert 0 < np.count_nonzero(labels) < labels.size
    on_disk = json.loads((out / "manifest.json").read_text())
    local_disk = json.loads((local_out / "manifest.json").read_text())
    for key in ("medfcn_version", "model", "device", "summary"):
        assert on_disk[key] == local_disk[key], key
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in local_out.iterdir())
    assert partial_files(out) == []


def test_local_cluster_of_two_workers_matches_a_local_run(tmp_path, model_file, inputs, local_run, monkeypatch):
    """... and leaves nothing in the system's temporary folder (Dask's scratch space lives in OUT, then goes)."""
    import tempfile

    temp = tmp_path / "system-temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    out = tmp_path / "out"

    manifest = run_batch(
        [inputs],
        out,
        model=model_file,
        settings=InferenceSettings(device="cpu"),
        cluster=ClusterSettings(workers=2),
        progress=False,
    )

    assert_same_as_local(out, manifest, local_run)
    assert [c.status for c in manifest.cases] == [Status.FAILED] + [Status.OK] * 5
    assert not list(temp.iterdir())  # no dask-scratch-space left behind


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.fixture(scope="module")
def cluster():
    """A running cluster of 2 worker processes, as ``dask scheduler`` + ``dask worker --nworkers 2`` would give."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as running:
        yield running


def test_existing_cluster_by_scheduler_address(tmp_path, model_file, inputs, local_run, cluster):
    from distributed import Client

    out = tmp_path / "out"
    manifest = run_batch(
        [inputs],
        out,
        model=model_file,
        settings=InferenceSettings(device="cpu"),
        cluster=ClusterSettings(scheduler=cluster.scheduler_address),
        progress=False,
    )
    with Client(cluster) as client:
        loaded = client.run(loaded_models)
        threads = client.run(_torch_threads)

    assert_same_as_local(out, manifest, local_run)
    sha256 = hashlib.sha256(model_file.read_bytes()).hexdigest()
    # Each worker that ran a case holds one model, loaded once, for the rest of its cases.
    assert [m for m in loaded.values() if m] and all(
        m in ([], [(str(model_file), sha256, InferenceSettings(device="cpu"))]) for m in loaded.values()
    )
    cores = len(os.sched_getaffinity(0))
    assert all(n == max(1, cores // 2) for n, m in zip(threads.values(), loaded.values(), strict=True) if m)


def test_worker_refuses_a_different_model_file(tmp_path, model_file, inputs, cluster):
    """A worker that sees another file at the model's path (no shared filesystem) fails its cases, unsegmented."""
    from medfcn.batch.cases import Job
    from medfcn.batch.cluster import run_on_cluster
    from medfcn.data.discovery import find_cases

    out = tmp_path / "out"
    jobs = [Job(i, spec, out / f"{spec.case}.nii.gz") for i, spec in enumerate(find_cases([inputs])[1:3])]
    recorded = {}

    run_on_cluster(
        jobs,
        recorded.__setitem__,
        lambda case: None,
        model_path=str(model_file),
        sha256="0" * 64,
        settings=InferenceSettings(device="cpu"),
        where=ClusterSettings(scheduler=cluster.scheduler_address),
    )

    assert sorted(recorded) == [0, 1]
    assert all(r.status == Status.FAILED and "SHA-256 differs" in r.error for r in recorded.values())
    assert not out.exists() or not list(out.glob("*.nii.gz"))


def test_workers_and_scheduler_together_are_refused(tmp_path, model_file, inputs):
    with pytest.raises(UsageError, match="not both") as info:
        run_batch(
            [inputs],
            tmp_path / "out",
            model=model_file,
            cluster=ClusterSettings(workers=2, scheduler="tcp://127.0.0.1:8786"),
            progress=False,
        )
    assert info.value.exit_code == 2 and not (tmp_path / "out").exists()  # refused before anything is done


def test_quiet_dask_run_prints_only_the_failures(tmp_path, model_file, inputs):
    """``--quiet`` with ``--workers``: Dask's own INFO lines stay off the terminal; the broken case still shows."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("medfcn")
    done = subprocess.run(
        [
            str(script),
            "segment",
            str(inputs),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(model_file),
            "--device",
            "cpu",
            "--workers",
            "1",
            "--quiet",
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert done.returncode == 1  # the broken file
    lines = done.stderr.strip().splitlines()
    assert lines and all("INFO" not in line for line in lines), done.stderr
    assert any("broken" in line for line in lines)
