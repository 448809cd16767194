"""How sample_data/ was made from the shared Colin27 scan (kept for the record; re-running rewrites it).

    python sample_data/make_sample_data.py /path/to/colin27 sample_data

- images/colin27.nii.gz, labels/colin27.nii.gz: the T1 and BET's brain mask, unchanged (``make_reference_mask.py``
  then moves that mask to labels_bet/ and writes the training label, brain + CSF, in labels/).
- dicom/colin27_dicom/: the T1 resampled to 1.5 x 1.5 x 2.0 mm as a DICOM MR series (int16, one file per
  slice, shuffled file names), and labels/colin27_dicom.nii.gz: the mask resampled (nearest) onto that grid.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import SimpleITK as sitk


def resample(img: sitk.Image, spacing, interp) -> sitk.Image:
    size = [int(round(n * s / t)) for n, s, t in zip(img.GetSize(), img.GetSpacing(), spacing, strict=True)]
    return sitk.Resample(
        img, size, sitk.Transform(), interp, img.GetOrigin(), spacing, img.GetDirection(), 0, img.GetPixelID()
    )


def write_series(img: sitk.Image, folder: Path, seed: int = 27) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.Cast(img, sitk.sitkInt16)
    d = img.GetDirection()
    rnd = random.Random(seed)
    names = [f"IM{rnd.randrange(10**6):06d}" for _ in range(img.GetDepth())]
    rnd.shuffle(names)
    study, series = "1.2.826.0.1.3680043.10.1234.27.1", "1.2.826.0.1.3680043.10.1234.27.1.1"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(img.GetDepth()):
        sl = img[:, :, i]
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series}.{i + 1}",
            "0020|000d": study,
            "0020|000e": series,
            "0020|0011": "1",
            "0020|0013": str(i + 1),
            "0020|0052": f"{study}.9",  # FrameOfReferenceUID: a DICOM SEG or RTSTRUCT of the series needs it
            "0008|103e": "Colin27 T1 (sample)",
            "0010|0010": "COLIN27^SAMPLE",
            "0010|0020": "COLIN27",
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, i))),
            "0018|0050": f"{img.GetSpacing()[2]:.6f}",
            "0028|0030": f"{img.GetSpacing()[1]:.6f}\\{img.GetSpacing()[0]:.6f}",
        }
        for k, v in tags.items():
            sl.SetMetaData(k, v)
        writer.SetFileName(str(folder / f"{names[i]}.dcm"))
        writer.Execute(sl)


def main(src: Path, out: Path) -> None:
    t1, mask = sitk.ReadImage(str(src / "t1.nii.gz")), sitk.ReadImage(str(src / "brain_mask.nii.gz"))
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(t1, str(out / "images" / "colin27.nii.gz"), True)
    sitk.WriteImage(sitk.Cast(mask > 0, sitk.sitkUInt8), str(out / "labels" / "colin27.nii.gz"), True)
    small = resample(t1, (1.5, 1.5, 2.0), sitk.sitkLinear)
    write_series(small, out / "dicom" / "colin27_dicom")
    # The reference on the grid medfcn reads the series on (GDCM may flip the slice axis: same physical grid).
    from medfcn.data.reader import read_scan

    grid = read_scan(out / "dicom" / "colin27_dicom").to_sitk()
    ref = sitk.Resample(sitk.Cast(mask > 0, sitk.sitkUInt8), grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    sitk.WriteImage(ref, str(out / "labels" / "colin27_dicom.nii.gz"), True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
