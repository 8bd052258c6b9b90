"""Probes of a trained network: loss landscape, curvature, ResNEst risk gap, float16 peaks."""
