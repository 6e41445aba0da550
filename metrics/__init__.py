"""Metric registry, image metrics (FID/KID/PR/SWD) and 3D metrics."""
