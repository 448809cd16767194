"""DICOM objects medfcn writes and reads back: SEG, RTSTRUCT, their references to a series, and label codes."""
