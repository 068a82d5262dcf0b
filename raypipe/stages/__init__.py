"""Transfer stages on Ray Train: one readable training loop, methods plugged in as objectives."""
