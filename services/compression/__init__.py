"""Model compression gateway (CompressionService)."""
