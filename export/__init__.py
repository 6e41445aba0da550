"""gen_samples.py's back end (as metrics/ is calc_metrics.py's): images, videos, interpolations,
depth and meshes from a snapshot."""
