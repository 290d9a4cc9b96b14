"""Data curation gateway (CurationService)."""
