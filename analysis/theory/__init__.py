"""The papers' mathematics in float64: one module per paper, plus the shared activations."""
