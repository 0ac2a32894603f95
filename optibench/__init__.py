"""optibench: paired, reproducible optimizer comparisons as a service."""

__version__ = "0.1.0"
