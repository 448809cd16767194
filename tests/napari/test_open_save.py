"""Opening and saving medical files without naming the plugin, in a real viewer (run under ``xvfb-run -a``).

napari's own reader claims ``*.nii.gz``, ``*.nrrd``, ``*.dcm``... too (through imageio, which cannot read them), so
napari asks which reader to use (File > Open) or raises (``viewer.open(path, plugin=None)``). Once medfcn has been
used, napari's reader preference names medfcn for the medical patterns the user has not assigned.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from napari.settings import get_settings

from napari_plugin._widgets._scan_views import READER_PATTERNS
from tests.support.napari import gui
from tests.support.scans import affine_from_codes, head_labels, head_volume, write_scan_file


@gui
def test_after_first_use_napari_opens_and_saves_medical_files_with_medfcn(viewer, tmp_path):
    head = write_scan_file(tmp_path / "head.nrrd", head_volume(), affine_from_codes("LSA"))
    mask = write_scan_file(tmp_path / "mask.nii.gz", head_labels(), affine_from_codes("LSA"))
    viewer.open(str(head), plugin="medfcn")  # the plugin's first use
    preferred = get_settings().plugins.extension2reader
    assert all(preferred.get(p) == "medfcn" for p in READER_PATTERNS)

    (labels,) = viewer.open(str(mask), plugin=None)  # napari's own choice, as File > Open makes it
    assert type(labels).__name__ == "Labels" and "grid" in labels.metadata

    viewer.layers.selection = {labels}
    out = tmp_path / "saved.nii.gz"
    assert viewer.layers.save(str(out), selected=True) == [str(out)]  # no plugin named: medfcn's NIfTI writer
    saved, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(mask))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), sitk.GetArrayFromImage(source))
    np.testing.assert_allclose(saved.GetDirection(), source.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(saved.GetOrigin(), source.GetOrigin(), atol=1e-4)


@gui
def test_a_reader_the_user_chose_is_kept(viewer, tmp_path):
    settings = get_settings().plugins
    settings.extension2reader = {**settings.extension2reader, "*.nrrd": "napari"}
    head = write_scan_file(tmp_path / "head.nii.gz", head_volume(), affine_from_codes("RAS"))
    viewer.open(str(head), plugin="medfcn")
    assert settings.extension2reader["*.nrrd"] == "napari" and settings.extension2reader["*.nii.gz"] == "medfcn"
