"""Audio deepfake source tracing: closed-set attribution of synthetic speech and detection of unseen systems."""

__version__ = "0.1.0"
