"""Post-training compression operators and export."""
