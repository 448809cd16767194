"""Scoring label maps: metrics, per-case scoring, error components, results, the evaluate command and its report."""
