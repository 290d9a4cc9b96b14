"""The text generation gateway (TextGenerationService on port 50053)."""
