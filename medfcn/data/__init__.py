"""Scans in and out: the Scan type with its geometry, readers, atomic writers, DICOM series, case discovery."""
