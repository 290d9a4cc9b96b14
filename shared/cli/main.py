"""`jobmesh <area> <verb>`: the command-line client (argparse over `shared.client`).

Exit codes: 0 ok; 1 the request or the job failed (a job that ends FAILED or CANCELLED, or is
not done when `jobs wait` gives up); 2 usage error (bad flags, unreadable input, no endpoint
configured); 3 cannot reach the mesh (UNAVAILABLE, or no connection before the deadline);
4 auth refused (UNAUTHENTICATED, PERMISSION_DENIED). Errors print `error: <CODE> <reason>:
<message>` on stderr, then one `  field: problem` line per field violation.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from shared.cli import batch as cli_batch
from shared.cli import commands
from shared.cli.render import Output
from shared.client import (
    DEFAULT_TIMEOUT_S,
    Client,
    ClientSettings,
    ConfigError,
    JobmeshClientError,
    job_state,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH = 0, 1, 2, 3, 4

TOP_HELP = """\
Settings are resolved as: flags > environment (JOBMESH_ENDPOINT, JOBMESH_ENDPOINT_<DOMAIN>,
JOBMESH_API_KEY, JOBMESH_TLS*) > --env-file > .jobmesh/local.env in this directory or its
nearest parent.

exit codes: 0 ok, 1 request or job failed, 2 usage error, 3 cannot reach the mesh,
4 auth refused

examples:
  jobmesh ocr recognize scan.png
  jobmesh --output json jobs list --state running
  jobmesh jobs wait jobs/0f3c9a --timeout 300
  jobmesh batch submit scans.jsonl --service ocr
"""

GLOBAL_DEFAULTS = {"endpoint": None, "api_key": None, "env_file": None, "output": "text",
                   "out": None, "timeout": None, "tls": None, "tls_ca_file": None,
                   "tls_cert_file": None, "tls_key_file": None}


def _positive(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not f > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value!r}")
    return f


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, not {value!r}")
    return int(value)


def _state(value: str) -> int:
    try:
        return job_state(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _global_flags() -> argparse.ArgumentParser:
    """Flags accepted before or after any command (SUPPRESS: a later parser must not reset
    a value given earlier)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False,
                                argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("connection and output (any position)")
    g.add_argument("--endpoint", metavar="HOST:PORT", help="gateway to call (default: settings)")
    g.add_argument("--api-key", metavar="KEY", help="API key sent as `authorization: Bearer`")
    g.add_argument("--env-file", metavar="PATH", help="read JOBMESH_* settings from this file")
    g.add_argument("--tls", action="store_true",
                   help="TLS with the system's trust store (JOBMESH_TLS); implied by "
                        "--tls-ca-file")
    g.add_argument("--tls-ca-file", metavar="PEM",
                   help="CA bundle that signed the gateway's certificate (JOBMESH_TLS_CA_FILE)")
    g.add_argument("--tls-cert-file", metavar="PEM", help="client certificate for gateways "
                   "that require mTLS (JOBMESH_TLS_CLIENT_CERT_FILE)")
    g.add_argument("--tls-key-file", metavar="PEM",
                   help="the client certificate's key (JOBMESH_TLS_CLIENT_KEY_FILE)")
    g.add_argument("--output", choices=["text", "json"],
                   help="print format: text (default) or proto JSON")
    g.add_argument("--out", metavar="PATH", help="write the output to PATH instead of stdout")
    g.add_argument("--timeout", metavar="SECONDS", type=_positive,
                   help=f"deadline per call (default {DEFAULT_TIMEOUT_S:g}); for `jobs wait` "
                        "how long to wait; `jobs watch` is unbounded without it")
    return p


def _command(sub, name: str, handler, summary: str, example: str, flags):
    p = sub.add_parser(name, parents=[flags], help=summary, description=textwrap.fill(summary, 79),
                       epilog=f"example:\n  {example}", allow_abbrev=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    flags = _global_flags()
    parser = argparse.ArgumentParser(
        prog="jobmesh", parents=[flags], allow_abbrev=False, epilog=TOP_HELP,
        description="Command-line client for the jobmesh gRPC mesh.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    areas = parser.add_subparsers(dest="area", metavar="AREA", required=True)

    ocr = areas.add_parser("ocr", help="optical character recognition",
                           description="Optical character recognition (PP-OCR).")
    verbs = ocr.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = _command(verbs, "recognize", commands.ocr_recognize,
                 "Recognize the text of images (PNG, JPEG, BMP, TIFF, WebP; '-' reads stdin). "
                 "Waits and prints the text; with --async queues a job per file and prints "
                 "its name.",
                 "jobmesh ocr recognize scan.png\n"
                 "  jobmesh ocr recognize --async --request-id batch7 a.png b.png | "
                 "xargs -n1 jobmesh jobs wait", flags)
    p.add_argument("files", nargs="+", metavar="FILE", help="image file(s)")
    p.add_argument("--classify-angle", action="store_true",
                   help="run the 0/180 degree angle classifier on each line")
    p.add_argument("--no-long-lines", action="store_true",
                   help="turn off tiled detection and windowed recognition (the by-hand "
                        "baseline; very long lines then read as nothing)")
    p.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                   help="drop lines below this confidence, 0..1 (default: the server's, 0.5)")
    p.add_argument("--async", dest="submit", action="store_true",
                   help="queue a job instead of waiting; prints the job name")
    p.add_argument("--request-id", metavar="ID", default="",
                   help="idempotency key for --async (a repeat returns the first job); with "
                        "several files the n-th file uses ID-n")

    au = areas.add_parser("audio", help="sound tagging, voice activity, speech to and from text",
                          description="Audio: sound tagging (YAMNet, 521 AudioSet classes), "
                                      "voice activity (silero VAD), speech recognition (Whisper "
                                      "tiny.en) and synthesis (piper). Files: WAV, FLAC, Ogg, "
                                      "MP3.")
    verbs = au.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = _command(verbs, "tag", commands.audio_tag,
                 "Tag the sounds of audio files: the top classes by mean score over the clip "
                 "(score and label per line); --segments adds the best class of every 0.96 s "
                 "window.", "jobmesh audio tag doorbell.ogg --top-k 3 --segments", flags)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio file(s) ('-' reads stdin)")
    p.add_argument("--top-k", type=_count, default=0, metavar="K",
                   help="classes to print (default: the server's, 5)")
    p.add_argument("--segments", action="store_true", help="also per-window classes")
    p.add_argument("--model", default="", help="tagger by registry name (default yamnet)")
    p = _command(verbs, "vad", commands.audio_vad,
                 "Find where speech is: one `start end` line (seconds) per segment, then the "
                 "total.", "jobmesh audio vad meeting.flac --min-silence-ms 300", flags)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio file(s) ('-' reads stdin)")
    p.add_argument("--threshold", type=float, default=0.0, metavar="P",
                   help="speech probability threshold, 0..1 (default: the server's, 0.5)")
    p.add_argument("--min-speech-ms", type=_count, default=0, metavar="MS",
                   help="drop shorter speech (default 250)")
    p.add_argument("--min-silence-ms", type=_count, default=0, metavar="MS",
                   help="shorter pauses do not split a segment (default 100)")
    p = _command(verbs, "transcribe", commands.audio_transcribe,
                 "Transcribe English speech (Whisper tiny.en after silero VAD): prints the "
                 "text; --words prints `start end word` lines.",
                 "jobmesh audio transcribe meeting.flac --words", flags)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio file(s) ('-' reads stdin)")
    p.add_argument("--no-vad", action="store_true",
                   help="transcribe the whole file, silence included")
    p.add_argument("--beam-size", type=_count, default=0, metavar="N",
                   help="beam width 1..5 (default: the server's, 1 = greedy)")
    p.add_argument("--words", action="store_true", help="one line per word with its times")
    p = _command(verbs, "synthesize", commands.audio_synthesize,
                 "Synthesize English speech from TEXT ('-' reads stdin) into a WAV file given "
                 "with --out (piper voice en_US-joe-medium).",
                 'jobmesh audio synthesize "Your order has shipped." --out order.wav', flags)
    p.add_argument("text", metavar="TEXT", help="at most 5,000 characters")
    p.add_argument("--length-scale", type=float, default=0.0, metavar="S",
                   help="speaking slowness, 0.25..4 (default: the voice's, 1.0)")

    tg = areas.add_parser("textgen", help="text generation",
                          description="Text generation (SmolLM2, lossless speculative "
                                      "decoding).")
    verbs = tg.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = _command(verbs, "generate", commands.textgen_generate,
                 "Generate a completion of PROMPT (sent as one user chat message unless --raw). "
                 "Prints the text; --stream prints it as it is decoded; --output json prints "
                 "{text, token_ids, usage}.",
                 'jobmesh textgen generate "Write a haiku about queues" --stream', flags)
    p.add_argument("prompt", metavar="PROMPT", help="the prompt ('-' reads stdin)")
    p.add_argument("--raw", action="store_true",
                   help="send PROMPT as raw model input instead of a chat message")
    p.add_argument("--max-new-tokens", type=_count, default=0, metavar="N",
                   help="tokens to generate at most (default: the server's, 128)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=0.0, metavar="P")
    p.add_argument("--top-k", type=_count, default=0, metavar="K")
    p.add_argument("--seed", type=int, default=None, metavar="S")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop before this text (repeatable)")
    p.add_argument("--speculation", default="auto",
                   choices=["off", "token_recycling", "prompt_lookup", "auto"],
                   help="draft tokens to verify per step; lossless at temperature 0 "
                        "(default auto)")
    p.add_argument("--stream", action="store_true", help="print tokens as they are decoded")

    jobs = areas.add_parser("jobs", help="inspect and control jobs",
                            description="Jobs of every domain (only the caller's own).")
    verbs = jobs.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = _command(verbs, "get", commands.jobs_get, "Show one job.", "jobmesh jobs get jobs/0f3c9a",
                 flags)
    p.add_argument("name", help="job name, jobs/<id>")
    p = _command(verbs, "list", commands.jobs_list, "List your jobs, newest first (all pages).",
                 "jobmesh jobs list --state failed --domain ocr", flags)
    p.add_argument("--state", type=_state, action="append", metavar="S",
                   help="only jobs in this state (repeatable): queued, running, succeeded, "
                        "failed, cancelling, cancelled")
    p.add_argument("--domain", default="", help="only jobs of this domain, e.g. ocr")
    p.add_argument("--page-size", type=_count, default=0, metavar="N",
                   help="jobs fetched per call (default: the server's, 50)")
    p = _command(verbs, "cancel", commands.jobs_cancel,
                 "Request cancellation: a queued job never starts, a running one stops at its "
                 "next batch boundary.", "jobmesh jobs cancel jobs/0f3c9a", flags)
    p.add_argument("name", help="job name, jobs/<id>")
    p = _command(verbs, "wait", commands.jobs_wait,
                 "Wait until a job is done and show it. Exit 0 if it SUCCEEDED, 1 if it FAILED, "
                 "was CANCELLED or is still running when --timeout (default 60 s) passes.",
                 "jobmesh jobs wait jobs/0f3c9a --timeout 300", flags)
    p.add_argument("name", help="job name, jobs/<id>")
    p = _command(verbs, "watch", commands.jobs_watch,
                 "Print a line per event (snapshot, state change, progress) until the job is "
                 "done; exit code as for `jobs wait`.", "jobmesh jobs watch jobs/0f3c9a", flags)
    p.add_argument("name", help="job name, jobs/<id>")
    p = _command(verbs, "delete", commands.jobs_delete,
                 "Delete a job record, its events and its artifacts now.",
                 "jobmesh jobs delete jobs/0f3c9a", flags)
    p.add_argument("name", help="job name, jobs/<id>")

    batch = areas.add_parser(
        "batch", help="batch jobs from JSONL manifests",
        description="Batch jobs: one method called for every line of a JSONL manifest "
                    '({"custom_id": "...", "body": {...}} per line, the body being the '
                    'request as proto-JSON; for OCR and audio also '
                    '{"custom_id": "...", "file": PATH}).')
    verbs = batch.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = _command(verbs, "submit", cli_batch.batch_submit,
                 "Create a batch from FILE ('-' reads stdin), show its progress until it is "
                 "done, and write the output and error JSONL next to FILE (or --results-dir). "
                 "A manifest with bad lines is refused before any work starts, naming every "
                 "bad line. Exit 0 if the batch SUCCEEDED (even with failed lines: see the "
                 "errors file), 1 if it FAILED (e.g. EXPIRED) or was CANCELLED.",
                 "jobmesh batch submit scans.jsonl --service ocr\n"
                 "  jobmesh batch submit prompts.jsonl --service textgen --no-wait", flags)
    p.add_argument("file", metavar="FILE", help="the JSONL manifest")
    p.add_argument("--service", required=True, choices=sorted(cli_batch.DEFAULT_METHODS),
                   help="the service every line calls")
    p.add_argument("--method", default="",
                   help="its method (default: Recognize for ocr, Generate for textgen)")
    p.add_argument("--request-id", default="", metavar="ID",
                   help="idempotency key: a repeat returns the first batch")
    p.add_argument("--completion-window", type=_positive, default=None, metavar="SECONDS",
                   help="the batch FAILS with reason EXPIRED if not done by then, keeping "
                        "finished lines (default: the server's, 24 h)")
    p.add_argument("--no-wait", action="store_true",
                   help="print the batch's name and return at once")
    p.add_argument("--results-dir", metavar="DIR", default=None,
                   help="where to write <FILE>.<id>.output.jsonl and .errors.jsonl")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    for verb, fn, summary, example in (
            ("watch", cli_batch.batch_watch,
             "Show a batch's progress until it is done (re-attaches the progress bar); exit "
             "code as for `jobs wait`.", "jobmesh batch watch jobs/0f3c9a"),
            ("cancel", cli_batch.batch_cancel,
             "Cancel a batch: no new chunks start, running ones stop at their next line "
             "boundary, finished lines are kept in the output file.",
             "jobmesh batch cancel jobs/0f3c9a"),
            ("results", cli_batch.batch_results,
             "Print a finished batch's results as JSONL, one line per custom_id in manifest "
             "order: {custom_id, line, response} or {custom_id, line, error}.",
             "jobmesh batch results jobs/0f3c9a > results.jsonl")):
        p = _command(verbs, verb, fn, summary, example, flags)
        p.add_argument("name", help="batch name, jobs/<id>")
        if verb == "watch":
            p.add_argument("--quiet", action="store_true", help="no progress display")
        if verb == "results":
            p.add_argument("--no-errors", action="store_true", help="only lines that succeeded")

    models = areas.add_parser("models", help="the model registry",
                              description="The model registry (read-only to tenants).")
    verbs = models.add_subparsers(dest="verb", metavar="VERB", required=True)
    _command(verbs, "list", commands.models_list,
             "List registered models with their serving version.", "jobmesh models list", flags)
    p = _command(verbs, "show", commands.models_show,
                 "Show one model: its versions (size, where each came from; * serves) and the "
                 "serving history rollback returns to.", "jobmesh models show ppocr-rec", flags)
    p.add_argument("name", help="model name")
    p = _command(verbs, "promote", commands.models_promote,
                 "Point a model's serving pointer at a version (admin key). Workers load it "
                 "within JOBMESH_MODEL_REFRESH_S, without a restart.",
                 "jobmesh models promote ppocr-rec:rapidocr-3.10.0-int8dynamic-57cd494c", flags)
    p.add_argument("model", metavar="NAME:VERSION")
    p = _command(verbs, "rollback", commands.models_rollback,
                 "Point a model's serving pointer back at the version it served before the "
                 "last promotion (admin key).", "jobmesh models rollback ppocr-rec", flags)
    p.add_argument("name", help="model name")

    cur = areas.add_parser(
        "curation", help="data curation",
        description="Curate datasets: JSONL (.gz, .zst) or Parquet shards in your data space "
                    "(`data/<path>` in S3), a pipeline of filter and dedup steps, curated "
                    "shards and a report out. See docs/curation.md for the pipeline schema.")
    verbs = cur.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = _command(verbs, "upload", commands.curation_upload,
                 "Upload shard files to data/<PREFIX>/<file name>.",
                 "jobmesh curation upload shards/*.jsonl.gz --prefix web/2026-11", flags)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--prefix", required=True, metavar="PATH", help="folder in your data space")
    p = _command(verbs, "submit", commands.curation_submit,
                 "Queue a curation job over every shard under --input-prefix and print its "
                 "name; --wait shows progress, then the report (documents kept and removed per "
                 "step and reason, the output prefix, the HTML report's URL). Exit code as "
                 "for `jobs wait`.",
                 "jobmesh curation submit --input-prefix web/2026-11 --output-prefix "
                 "web/2026-11-clean --pipeline pipeline.yaml --wait", flags)
    p.add_argument("--input-prefix", required=True, metavar="PATH")
    p.add_argument("--output-prefix", required=True, metavar="PATH")
    p.add_argument("--pipeline", required=True, metavar="FILE.yaml",
                   help="a YAML list of {step: NAME, ...params} ('-' reads stdin)")
    p.add_argument("--text-field", default="", help="JSON field with the text (default text)")
    p.add_argument("--id-field", default="", help="JSON field with the id (default id)")
    p.add_argument("--request-id", default="", metavar="ID", help="idempotency key")
    p.add_argument("--wait", action="store_true", help="follow the job and print the report")
    p = _command(verbs, "report", commands.curation_report,
                 "Show a finished curation job's report.", "jobmesh curation report jobs/0f3c9a",
                 flags)
    p.add_argument("name", help="job name, jobs/<id>")
    p = _command(verbs, "score", commands.curation_score,
                 "Score a few texts: language, profanity, the heuristic filters' decisions.",
                 'jobmesh curation score "Some paragraph to judge." -', flags)
    p.add_argument("texts", nargs="+", metavar="TEXT", help="texts ('-' reads stdin)")
    _command(verbs, "steps", commands.curation_steps,
             "List the pipeline steps and their parameters.", "jobmesh curation steps", flags)

    comp = areas.add_parser(
        "compression", help="model compression",
        description="Compress a registered model with a recipe; the job evaluates the result "
                    "against the original on the same inputs and registers it as a new version "
                    "with a report (admin key).")
    verbs = comp.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = _command(verbs, "submit", commands.compression_submit,
                 "Queue a compression job and print its name; --wait shows progress and the "
                 "report (size ratio, latency ratio, metric before/after). Exit code as for "
                 "`jobs wait`.",
                 "jobmesh compression submit --model ppocr-rec --recipe int8_dynamic --wait\n"
                 "  jobmesh compression submit --model smollm2-135m-instruct --recipe "
                 "sparse_2_4 --method wanda --wait", flags)
    p.add_argument("--model", required=True, metavar="NAME[:VERSION]",
                   help="the model to compress (default version: the one serving)")
    p.add_argument("--recipe", required=True,
                   choices=["int8_dynamic", "int8_static", "fp16", "sparse_2_4", "tensorrt",
                            "compeft"])
    p.add_argument("--op-type", action="append", default=[], metavar="OP",
                   help="int8 recipes: quantize this ONNX op type (repeatable; default: "
                        "measure each and keep those that do not slow the model)")
    p.add_argument("--per-tensor", action="store_true",
                   help="int8_static: one scale per tensor instead of per channel")
    p.add_argument("--calibration", default="percentile",
                   choices=["percentile", "minmax", "entropy"],
                   help="int8_static: how activation ranges are set (default percentile)")
    p.add_argument("--method", default="wanda", choices=["wanda", "magnitude"],
                   help="sparse_2_4: how the kept weights are chosen (default wanda)")
    p.add_argument("--include", default="", metavar="REGEX",
                   help="sparse_2_4: MatMul names to prune (default: MLP layers of LMs, all "
                        "MatMuls otherwise)")
    p.add_argument("--fp16", action="store_true", help="tensorrt: build fp16 kernels too")
    p.add_argument("--density", type=float, default=0.0, metavar="F",
                   help="compeft: fraction of each adapter tensor kept (default 0.3)")
    p.add_argument("--alpha", type=float, action="append", default=[], metavar="A",
                   help="compeft: an alpha to try (repeatable; one fixes it; default: tune "
                        "from 1, 2, 4, 8)")
    p.add_argument("--task-vector", action="store_true",
                   help="compeft: compress the change from peft's seeded initialisation")
    p.add_argument("--samples", type=_count, default=0, metavar="N",
                   help="evaluation items (default: the model family's)")
    p.add_argument("--promote", action="store_true",
                   help="promote the new version if the bounds below hold")
    p.add_argument("--max-metric-delta", type=float, default=0.0, metavar="D",
                   help="with --promote: largest allowed rise of the metric (default 0)")
    p.add_argument("--max-latency-ratio", type=float, default=0.0, metavar="R",
                   help="with --promote: largest allowed new/original latency (default 1.0)")
    p.add_argument("--request-id", default="", metavar="ID", help="idempotency key")
    p.add_argument("--wait", action="store_true", help="follow the job until it is done")
    _command(verbs, "recipes", commands.compression_recipes,
             "List the recipes and whether this deployment can run each.",
             "jobmesh compression recipes", flags)
    return parser


def exit_code(err: JobmeshClientError) -> int:
    if err.auth_refused:
        return EXIT_AUTH
    return EXIT_UNREACHABLE if err.unreachable else EXIT_FAILED


def report(err: JobmeshClientError) -> None:
    """One `error:` line on stderr, then the field violations (one the message already is
    word for word is not repeated)."""
    lines = [f"error: {err}"] + [f"  {f}: {d}" for f, d in err.field_violations
                                 if f"{f}: {d}" != err.message]
    print("\n".join(lines), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for k, v in GLOBAL_DEFAULTS.items():
        setattr(args, k, getattr(args, k, v))
    if args.area == "ocr" and args.request_id and not args.submit:
        parser.error("--request-id needs --async (a sync Recognize is not a job)")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        parser.error(f"--out {args.out}: no such directory")
    out = Output(args.out)
    try:
        settings = ClientSettings.resolve(
            args.endpoint, args.api_key, env_file=args.env_file, tls=args.tls or None,
            tls_ca_file=args.tls_ca_file, tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file)
        with Client(settings, timeout_s=args.timeout or DEFAULT_TIMEOUT_S) as client:
            return args.handler(client, args, out)
    except (ConfigError, commands.UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except JobmeshClientError as e:
        report(e)
        return exit_code(e)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `jobmesh jobs list | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    finally:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
