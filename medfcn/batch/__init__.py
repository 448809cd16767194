"""Folders of scans: the run, one case at a time, outputs, the manifest and the Dask cluster mode."""
