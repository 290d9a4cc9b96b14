"""Data curation: readers, filters, dedup, selection and reports."""
