"""What the server says about itself: Prometheus metrics, structured logs, build information."""
