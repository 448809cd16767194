"""Helping a person annotate: filling between annotated slices (ITK's morphological contour interpolation)."""
