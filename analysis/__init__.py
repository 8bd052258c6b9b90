"""blockaudit's library: the papers' mathematics in float64, the blocks and models, and the
analyses (risk gap, loss landscape, curvature). Pure functions and ``nn.Module``s: nothing here
reads config files, prints, or writes files except through explicit save/load functions."""
__version__ = "0.1.0"
