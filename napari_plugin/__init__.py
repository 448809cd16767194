"""medfcn's napari plugin: open scans with their geometry, segment from a dock, review against references.

The plugin is declared in ``napari.yaml`` (registered through the ``napari.manifest`` entry point); napari imports
each module on first use, so importing this package imports neither napari nor Qt.
"""

from __future__ import annotations

__all__: list[str] = []
