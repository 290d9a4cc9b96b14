"""Model runners: ONNX Runtime sessions with run-time execution-provider selection."""

from shared.runners.onnx import ModelRunner, choose_providers

__all__ = ["ModelRunner", "choose_providers"]
