"""The dock widgets: Segment and Review. Qt and napari are imported here, never in :mod:`medfcn`."""
