"""The napari plugin's manifest, reader, writer and sample data, in a real viewer (run under ``xvfb-run -a``).

Placement is checked against SimpleITK: the napari world position of a displayed voxel (``layer.data_to_world``),
taken back to LPS, must be the physical point of a SimpleITK voxel holding the same value.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from napari import save_layers

import napari_plugin
from medfcn.data.reader import read_scan
from napari_plugin._layers import LPS_TO_DISPLAY
from napari_plugin._reader import get_reader
from tests.support.napari import empty_labels_on, gui
from tests.support.scans import (
    affine_from_codes,
    head_labels,
    head_volume,
    lps_geometry,
    oblique_affine,
    oblique_lsa_affine,
    voxels_on,
    write_scan_file,
)

MANIFEST = Path(napari_plugin.__file__).parent / "napari.yaml"


def world_to_lps(world) -> np.ndarray:
    return LPS_TO_DISPLAY.T @ np.asarray(world, float)


def sitk_image(path: Path):
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def assert_placed_like_sitk(layer, image, n: int = 60, seed: int = 0) -> None:
    """Random displayed voxels sit where SimpleITK puts a voxel of the same value."""
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    rng = np.random.default_rng(seed)
    for d in rng.integers(0, layer.data.shape, size=(n, 3)):
        p = world_to_lps(layer.data_to_world(d))
        idx = image.TransformPhysicalPointToContinuousIndex(tuple(p.tolist()))
        np.testing.assert_allclose(idx, np.round(idx), atol=1e-3)
        assert layer.data[tuple(d)] == array[tuple(int(v) for v in np.round(idx))]


def grid(image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def assert_same_grid(a, b) -> None:
    assert a.GetSize() == b.GetSize()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(a, get)(), getattr(b, get)(), atol=1e-5, err_msg=get)


# -- manifest ------------------------------------------------------------------------------------------------------
def test_manifest_validates_and_every_python_name_imports():
    from npe2 import PluginManager, PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "medfcn" == importlib.metadata.metadata("medfcn")["Name"]
    manifest.validate_imports()
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.python_name
    pm = PluginManager()
    pm.discover(include_npe1=False)
    assert pm.get_manifest("medfcn").name == "medfcn"  # found through the napari.manifest entry point
    assert [s.display_name for s in manifest.contributions.sample_data] == ["Brain MRI (Colin27)"]


# -- reader --------------------------------------------------------------------------------------------------------
def test_reader_declines_what_it_does_not_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "text_only").mkdir()
    (tmp_path / "text_only" / "a.txt").write_text("x")
    for path in ("notes.txt", "empty", "text_only", "missing.nii.gz"):
        assert get_reader(str(tmp_path / path)) is None
    assert get_reader(12345) is None  # not a path at all: declined, not raised
    assert get_reader([str(tmp_path / "notes.txt"), str(tmp_path / "empty")]) is None


@gui
def test_reader_nifti_ras_is_shown_radiologically(viewer, tmp_path):
    """Hand-worked: a RAS-stored scan (i to the right, j forward, k up) is shown as (k reversed, j reversed,
    i reversed): slices from the top of the head down, anterior at the top, the patient's right on the left."""
    array = head_volume()
    path = write_scan_file(tmp_path / "t1.nii.gz", array, affine_from_codes("RAS", spacing=(1.0, 1.2, 1.5)))
    (layer,) = viewer.open(str(path), plugin="medfcn")
    assert layer.name == "t1" and layer._type_string == "image"
    np.testing.assert_array_equal(layer.data, np.transpose(array, (2, 1, 0))[::-1, ::-1, ::-1])
    np.testing.assert_allclose(layer.scale, (1.5, 1.2, 1.0))
    np.testing.assert_allclose(layer.rotate, np.eye(3))
    assert layer.metadata["source"] == str(path) and layer.metadata["case"] == "t1"
    assert layer.metadata["grid"]["size"] == [33, 37, 34]
    assert_placed_like_sitk(layer, sitk.ReadImage(str(path)))


@gui
@pytest.mark.parametrize("name,codes", [("ct.nrrd", "LSA"), ("a.mha", "PIR")])
def test_reader_sitk_formats_shape_scale_placement(viewer, tmp_path, name, codes):
    spacing = (1.0, 1.2, 1.5)
    path = write_scan_file(tmp_path / name, head_volume(), affine_from_codes(codes, spacing=spacing))
    (layer,) = viewer.open(str(path), plugin="medfcn")
    # LSA: display (I, P, L) = (j reversed, k reversed, i); PIR: (j, i, k reversed)
    axes = {"LSA": (1, 2, 0), "PIR": (1, 0, 2)}[codes]
    assert layer.data.shape == tuple(head_volume().shape[a] for a in axes)
    np.testing.assert_allclose(layer.scale, [spacing[a] for a in axes])
    assert_placed_like_sitk(layer, sitk.ReadImage(str(path)))


@gui
def test_reader_oblique_scan_keeps_its_rotation(viewer, tmp_path):
    path = write_scan_file(tmp_path / "obl.nii.gz", head_volume(), oblique_affine())
    (layer,) = viewer.open(str(path), plugin="medfcn")
    assert not np.allclose(layer.rotate, np.eye(3))
    assert_placed_like_sitk(layer, sitk.ReadImage(str(path)))


@gui
def test_reader_dicom_folder(viewer, tmp_path):
    from tests.support.scans import shuffled_names

    spacing = (0.9, 0.9, 2.0)
    folder = write_scan_file(
        tmp_path / "series", head_volume(), affine_from_codes("LPS", spacing=spacing), names=shuffled_names(34)
    )
    (layer,) = viewer.open(str(folder), plugin="medfcn")
    assert layer.name == "series" and layer.data.shape == (34, 37, 33)
    np.testing.assert_allclose(layer.scale, (2.0, 0.9, 0.9))
    assert layer.metadata["series_uid"]
    assert_placed_like_sitk(layer, sitk_image(folder))


@gui
def test_reader_folder_with_two_series_gives_two_layers(viewer, tmp_path):
    from tests.support.scans import write_dicom_pydicom

    folder = tmp_path / "study"
    aff = affine_from_codes("LPS", spacing=(1.0, 1.0, 2.0))
    write_dicom_pydicom(folder, head_volume(), aff, series_number=1, names=[f"a{k:03d}.dcm" for k in range(34)])
    small = head_volume((20, 24, 10), seed=3)
    write_dicom_pydicom(folder, small, aff, series_number=2, names=[f"b{k:03d}.dcm" for k in range(10)])
    (folder / "README.txt").write_text("not DICOM")
    assert get_reader(str(folder)) is not None
    layers = viewer.open(str(folder), plugin="medfcn")
    assert [la.name for la in layers] == ["study_1", "study_2"]
    assert layers[0].data.shape == (34, 37, 33) and layers[1].data.shape == (10, 24, 20)
    assert layers[0].metadata["series_uid"] != layers[1].metadata["series_uid"]


@gui
def test_reader_opens_a_label_map_as_labels(viewer, tmp_path):
    path = write_scan_file(tmp_path / "ref.nii.gz", head_labels(), affine_from_codes("LSA"))
    (layer,) = viewer.open(str(path), plugin="medfcn")
    assert layer._type_string == "labels"
    assert set(np.unique(layer.data)) == {0, 1, 2}


@gui
def test_reader_error_names_the_file(viewer, tmp_path):
    from medfcn.errors import ScanReadError

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a scan")
    assert get_reader(str(bad)) is not None  # ours by its name: reading it says what is wrong
    with pytest.raises(Exception, match="bad.nii.gz") as info:
        viewer.open(str(bad), plugin="medfcn")
    assert isinstance(info.value, ScanReadError) or isinstance(info.value.__cause__, ScanReadError)


# -- writer --------------------------------------------------------------------------------------------------------
@gui
@pytest.mark.parametrize("codes", ["LSA", "oblique"])
def test_writer_hand_drawn_labels_overlay_the_source_grid(viewer, tmp_path, codes):
    aff = oblique_affine() if codes == "oblique" else affine_from_codes("LSA", spacing=(0.8, 1.1, 1.6))
    source = write_scan_file(tmp_path / "scan.nii.gz", head_volume(), aff)
    (image,) = viewer.open(str(source), plugin="medfcn")
    drawn = empty_labels_on(viewer, image)
    drawn.brush_size = 1
    painted = [(3, 4, 5), (10, 20, 7), (image.data.shape[0] - 1, 0, image.data.shape[2] - 1)]
    for d in painted:
        drawn.paint(d, 2)
    assert np.count_nonzero(drawn.data) == len(painted)
    out = tmp_path / "drawn.nii.gz"
    save_layers(str(out), [drawn], plugin="medfcn")
    written, src = sitk.ReadImage(str(out)), sitk.ReadImage(str(source))
    assert_same_grid(written, src)
    assert written.GetPixelID() == sitk.sitkUInt8
    labels = np.transpose(sitk.GetArrayFromImage(written), (2, 1, 0))
    assert np.count_nonzero(labels) == len(painted)
    for d in painted:  # each painted voxel lands on the source voxel at the same physical point
        idx = written.TransformPhysicalPointToIndex(tuple(world_to_lps(drawn.data_to_world(d)).tolist()))
        assert labels[idx] == 2
        assert np.transpose(sitk.GetArrayFromImage(src), (2, 1, 0))[idx] == image.data[d]


@gui
@pytest.mark.parametrize("codes", ["LSA", "oblique"])
def test_writer_napari_new_labels_layer_saves_on_the_source_grid(viewer, tmp_path, codes):
    """A Labels layer napari makes itself ("New labels": transforms, no metadata) takes the scan's grid as it is
    added, and saves exactly on the source file's grid."""
    aff = oblique_affine() if codes == "oblique" else affine_from_codes("LSA")
    source = write_scan_file(tmp_path / "scan.nii.gz", head_volume(), aff)
    (image,) = viewer.open(str(source), plugin="medfcn")
    viewer.layers.selection.active = image
    viewer._new_labels()
    drawn = viewer.layers[-1]
    assert drawn.data.shape == image.data.shape and drawn.metadata["grid"] == image.metadata["grid"]
    drawn.data[5:9, 10:20, 3:30] = 1
    out = tmp_path / "new.nii.gz"
    save_layers(str(out), [drawn], plugin="medfcn")
    written = sitk.ReadImage(str(out))
    assert_same_grid(written, sitk.ReadImage(str(source)))
    expected = np.zeros(image.data.shape, np.uint8)
    expected[5:9, 10:20, 3:30] = 1
    from napari_plugin._layers import from_display

    np.testing.assert_array_equal(
        voxels_on(written, read_scan(source)),
        from_display(expected, image.metadata["display_axes"], image.metadata["display_flip"]),
    )


@gui
def test_writer_layer_with_no_scan_behind_it_keeps_its_physical_placement(viewer, tmp_path):
    """A Labels layer that overlays no scan exactly (here: shifted) is written with its own transforms."""
    source = write_scan_file(tmp_path / "scan.nii.gz", head_volume(), affine_from_codes("LSA"))
    (image,) = viewer.open(str(source), plugin="medfcn")
    drawn = viewer.add_labels(
        np.zeros(image.data.shape, np.uint8), scale=image.scale, translate=np.asarray(image.translate) + 2.0
    )
    assert "grid" not in drawn.metadata
    drawn.data[3, 4, 5] = 1
    out = tmp_path / "free.nii.gz"
    save_layers(str(out), [drawn], plugin="medfcn")
    written = sitk.ReadImage(str(out))
    array = np.transpose(sitk.GetArrayFromImage(written), (2, 1, 0))
    idx = written.TransformPhysicalPointToIndex(tuple(world_to_lps(drawn.data_to_world((3, 4, 5))).tolist()))
    assert array[idx] == 1 and np.count_nonzero(array) == 1


def test_writer_refuses_a_layer_that_does_not_fit_its_grid(tmp_path):
    from medfcn.errors import GridMismatchError
    from napari_plugin._writer import write_labels

    meta = {
        "grid": {
            "size": [4, 5, 6],
            "spacing": [1, 1, 1],
            "origin": [0, 0, 0],
            "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
        },
        "display_axes": [2, 1, 0],
        "display_flip": [False, False, False],
    }
    with pytest.raises(GridMismatchError, match="does not fit"):
        write_labels(tmp_path / "x.nii.gz", np.zeros((4, 5, 6), np.uint8), {"name": "x", "metadata": meta})
    assert write_labels(tmp_path / "y", np.zeros((6, 5, 4), np.uint8), {"metadata": meta}) == [
        str(tmp_path / "y.nii.gz")
    ]


# -- patient coordinates ------------------------------------------------------------------------------------------
def test_patient_coordinates_of_a_layer_point_are_sitk_physical_points_in_ras():
    """Layer data coordinates -> scan-file index -> RAS mm on an oblique LSA-like scan, against SimpleITK's
    TransformContinuousIndexToPhysicalPoint, the voxel the layer shows there, and napari's own placement."""
    from medfcn.data.scan import Scan
    from napari_plugin._layers import patient_text, scan_layer_data, scan_point

    spacing, origin, direction = lps_geometry(oblique_lsa_affine())
    shape = (7, 9, 5)
    flat = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)  # each voxel holds its own flat index
    data, kwargs, _ = scan_layer_data(Scan(flat, spacing, origin, direction), layer_type="image")
    meta = kwargs["metadata"]
    assert meta["display_axes"] != [0, 1, 2] and any(meta["display_flip"])  # reordered and flipped for display
    image = sitk.Image(list(shape), sitk.sitkUInt8)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(direction.flatten().tolist()))
    rng = np.random.default_rng(0)
    for shown in rng.uniform(-0.5, np.asarray(data.shape) - 0.5, size=(40, 3)):
        index, ras = scan_point(shown, meta)
        lps = image.TransformContinuousIndexToPhysicalPoint(tuple(index.tolist()))
        np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-9)
        world = np.asarray(kwargs["rotate"]) @ (np.asarray(kwargs["scale"]) * shown) + np.asarray(kwargs["translate"])
        np.testing.assert_allclose(world_to_lps(world), lps, atol=1e-9)  # where napari draws that point
    for shown in rng.integers(0, data.shape, size=(40, 3)):
        index, _ = scan_point(shown, meta)
        assert tuple(index) == np.unravel_index(data[tuple(shown)], shape)  # the voxel the layer shows there
    shown = (3.2, 1.9, 4.4)  # -> display voxel (3, 2, 4)
    voxel = tuple(int(v) for v in scan_point(np.round(shown), meta)[0])
    assert voxel == np.unravel_index(data[3, 2, 4], shape)
    x, y, z = image.TransformIndexToPhysicalPoint(voxel)
    assert patient_text(shown, meta) == (
        f"RAS {-x:.1f}, {-y:.1f}, {z:.1f} mm  voxel ({voxel[0]}, {voxel[1]}, {voxel[2]})"
    )
    assert patient_text((-0.7, 0, 0), meta) == "" and patient_text(np.asarray(data.shape) - 0.4, meta) == ""
    assert patient_text((1, 1, 1), {}) == ""


# -- sample data ---------------------------------------------------------------------------------------------------
@gui
def test_sample_opens_t1_and_brain_mask(viewer):
    layers = viewer.open_sample("medfcn", "colin27")
    assert [la._type_string for la in layers] == ["image", "labels"]
    t1, mask = layers
    assert t1.data.shape == mask.data.shape == (181, 217, 181)
    np.testing.assert_allclose(t1.scale, (1.0, 1.0, 1.0))
    assert set(np.unique(mask.data)) == {0, 1}
    # the reference a user reviews the bundled model against is the label it was trained on (brain + CSF), not
    # BET's tighter mask (which the Review dock would show as a 230 mL "spurious" shell of CSF)
    repo = Path(napari_plugin.__file__).parents[1]
    shipped = Path(napari_plugin.__file__).parent / "sample_data" / "colin27_brain_mask.nii.gz"
    assert shipped.read_bytes() == (repo / "sample_data" / "labels" / "colin27.nii.gz").read_bytes()
    image = sitk.ReadImage(str(Path(t1.metadata["source"])))
    assert Path(t1.metadata["source"]) == Path(napari_plugin.__file__).parent / "sample_data" / "colin27_t1.nii.gz"
    assert_placed_like_sitk(t1, image, n=20)
    # anatomy as a radiologist expects: the brain's front (anterior, low axis-1 index) is at the top of an axial
    # slice, and the mask's first slices (axis 0) are the top of the head (superior)
    zs = np.nonzero(mask.data.any(axis=(1, 2)))[0]
    top = world_to_lps(t1.data_to_world((zs[0], 0, 0)))[2]
    bottom = world_to_lps(t1.data_to_world((zs[-1], 0, 0)))[2]
    assert top > bottom  # LPS z is superior
