"""The audit: run every claim's check and turn what the checks produced into verdicts."""
