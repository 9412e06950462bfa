"""Verify stage: parity gates, host latency, the HTML report and package integrity checks."""
