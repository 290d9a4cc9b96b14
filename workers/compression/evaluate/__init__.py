"""Measuring compressed models against their parents on real data: CER of the OCR recognizer on
rendered lines, perplexity of the LM on held-out text, and calibration inputs for both."""

from workers.compression.evaluate.lm_perplexity import LmEval, calibration_feeds, evaluate_lm
from workers.compression.evaluate.ocr_lines import (
    LineSample,
    OcrEval,
    character_error_rate,
    edit_distance,
    evaluate_recognizer,
    recognizer_feeds,
    render_lines,
)
from workers.compression.evaluate.texts import calibration_text, held_out_text, text_lines

__all__ = [
    "LineSample",
    "LmEval",
    "OcrEval",
    "calibration_feeds",
    "calibration_text",
    "character_error_rate",
    "edit_distance",
    "evaluate_lm",
    "evaluate_recognizer",
    "held_out_text",
    "recognizer_feeds",
    "render_lines",
    "text_lines",
]
