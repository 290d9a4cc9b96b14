"""The OCR gateway (OcrService on port 50051)."""
