"""Model compression: recipes, evaluation and reports."""
