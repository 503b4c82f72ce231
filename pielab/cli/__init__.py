"""The ``pielab`` command.

Bad input never shows a traceback: every ``PielabError`` becomes one line on stderr and exit code 2.
Ray, Optuna and W&B are imported only by the sweep subcommands, so ``pielab train`` runs on a
machine that has just torch.

Exit codes: :mod:`pielab.cli.codes` (the one definition; ``--help`` of ``sweep`` and ``resume`` shows them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pielab.cli.codes import EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_INTERRUPTED, exit_code_for_signal
from pielab.errors import PielabError
from pielab.files import check_writable


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from pielab.models import get_model_entry, list_models

    rows = []
    for name in list_models():
        entry = get_model_entry(name)
        with torch.device("meta"):  # counts parameters without allocating them
            model = entry.builder()
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, entry.task, f"{params:,}", entry.description))
    widths = [max(len(r[i]) for r in rows + [("name", "task", "params", "")]) for i in range(3)]
    print(f"{'name':<{widths[0]}}  {'task':<{widths[1]}}  {'params':>{widths[2]}}  description")
    for name, task, params, desc in rows:
        print(f"{name:<{widths[0]}}  {task:<{widths[1]}}  {params:>{widths[2]}}  {desc}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pielab.train import CHECKPOINT_FILE, fit, fit_one_line, run

    if args.resume:
        if args.target or args.set:
            raise PielabError("--resume continues a run with its saved config; drop NAME and --set")
        if args.out:
            raise PielabError("--resume continues a run in its own folder; drop --out (copy the folder first "
                              "to continue a copy)")
        if args.overwrite:
            raise PielabError("--resume continues a run; --overwrite is for a new run")
        run_dir = Path(args.resume)
        # fit loads the checkpoint and refuses, in one line, one that is missing, unreadable, weights only
        # (a copied best.pt) or from other data, before it writes anything
        fit_one_line(fit, None, out_dir=run_dir, resume=run_dir / CHECKPOINT_FILE, progress=True)
        print(f"Run folder: {run_dir}")
        return 0
    if not args.target:
        raise PielabError("pielab train needs a model name or a config YAML (see `pielab models`)")
    summary = run(args.target, args.out, overrides=args.set, overwrite=args.overwrite, progress=True,
                  warn=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"Run folder: {summary['run_dir']}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pielab.cli.sweep import sweep_command

    return sweep_command(args.spec, args.set, args.out, args.address, resume_if_exists=args.resume_if_exists,
                         warm_from=args.warm_from)


def cmd_resume(args: argparse.Namespace) -> int:
    from pielab.cli.sweep import resume_command

    return resume_command(args.sweep_dir, overrides=args.set)


def cmd_status(args: argparse.Namespace) -> int:
    from pielab.cli.sweep import status_command

    return status_command(args.sweep_dir)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from pielab.cli.sweep import dashboard_command

    return dashboard_command(args.sweep_dir, args.host, args.port)


def cmd_report(args: argparse.Namespace) -> int:
    from pielab.cli.report import report_command

    if args.out:
        check_writable(Path(args.out))
    return report_command(args.sweep_dir, args.out)


def cmd_export(args: argparse.Namespace) -> int:
    from pielab.cli.report import export_command

    if args.out:
        check_writable(Path(args.out))
    return export_command(args.sweep_dir, args.top, args.out, pareto=args.pareto)


def cmd_cache(args: argparse.Namespace) -> int:
    from pielab.cli.cache import cache_command

    return cache_command(args.cache_dir, prune=args.prune, older_than=args.older_than,
                         keep_referenced=args.keep_referenced)


CACHE_HELP = """\
Without --prune: one line per entry (a processed source: cifar10-KEY, imdb-KEY) and per subset under it
(ENTRY/subsets/HASH: the rows one split setting selects), with its size and last use. Last use is the
mtime of the folder's last_used file, which every `pielab train` and every trial touches when it opens
the folder (folders built before pielab kept it: when they were built).

--prune removes the entries and subsets last used more than --older-than ago (default 30d; units s, m,
h, d, w), printing each with its size and the space freed. An entry goes with all its subsets; a recent
entry keeps its recent subsets and loses its old ones. Never removed: a folder whose build lock is held
(being built), an entry with a subset being built, lock files, raw/ (downloaded sources) and
fingerprints/.

--keep-referenced SWEEP_DIR... also keeps every entry and subset that a config in those sweep folders
opens (sweep.yaml's base config and every trials/*/config.yaml), resolved as `pielab train CONFIG`
resolves it in this shell (data.path, else $PIELAB_DATA_DIR, else the download), under the cache being
pruned. A config whose data cannot be found is reported and keeps nothing. Run --prune while no sweep is
starting: a process that opens an old entry at that instant may find it gone."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pielab",
        description="Hyperparameter sweeps for depth-vs-residual studies: Ray Tune + Optuna + W&B.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, func, help_text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter)
        p.set_defaults(func=func)
        return p

    set_help = "override a config key, e.g. --set train.epochs=2 (repeatable)"
    add("models", cmd_models, "list registered models: name, task, parameters")

    p = add("train", cmd_train, "train one model from a registered name or a config YAML")
    p.add_argument("target", nargs="?", metavar="NAME|CONFIG.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/NAME-TIMESTAMP)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint, in RUN_DIR itself, on the same data "
                        "(NAME, --set, --out and --overwrite are refused with it)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out be a folder that is not empty: pielab's own run files there are replaced, "
                        "other files are kept; never the config file being read")

    p = add("sweep", cmd_sweep, "run a hyperparameter sweep described by a YAML spec",
            epilog=EXIT_CODES_HELP)
    p.add_argument("spec", metavar="SWEEP.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--out", metavar="DIR", help="sweep folder (default <storage.path>/<name>-TIMESTAMP)")
    p.add_argument("--address", metavar="ADDR", help="join a running Ray cluster (e.g. auto or HOST:PORT)")
    p.add_argument("--resume-if-exists", action="store_true",
                   help="with --out: if DIR already holds this sweep, continue it as `pielab resume DIR` does "
                        "(a finished one exits 0); a different spec there is an error. For job retries, "
                        "requeues and cron")
    p.add_argument("--from", dest="warm_from", metavar="OLD_SWEEP_DIR",
                   help="warm start: the new Optuna study first receives OLD_SWEEP_DIR's finished trials "
                        "(values, states, per-epoch values); trials outside this spec's space are skipped")

    p = add("resume", cmd_resume, "finish an interrupted sweep, or continue one further with --set",
            epilog=EXIT_CODES_HELP)
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="continue the sweep (finished or not) with the same Optuna study: num_trials=N, "
                        "time_budget_s=S or max_concurrent=K; the trials already run are not rerun")

    p = add("status", cmd_status, "trials by state, best so far, time used (during or after a sweep)")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")

    p = add("report", cmd_report, "tables (md, csv, tex), figures (png) and one HTML page from a sweep")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--out", metavar="DIR", help="output folder (default SWEEP_DIR/report)")

    p = add("export", cmd_export, "the best configs as YAML that `pielab train` accepts")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, default=1, metavar="K",
                       help="how many of the best finished trials (default 1)")
    which.add_argument("--pareto", action="store_true",
                       help="every Pareto-optimal trial of a sweep with several objectives, one file each "
                            "(default SWEEP_DIR/pareto_configs.yaml, or pareto_configs_1.yaml .. _N.yaml)")
    p.add_argument("--out", metavar="FILE",
                   help="output YAML (default SWEEP_DIR/best_configs.yaml); with --top K>1: FILE-stem_1.yaml .. _K.yaml")

    p = add("cache", cmd_cache, "list the processed-data cache, or prune what was not used recently")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = CACHE_HELP
    p.add_argument("--cache-dir", metavar="DIR",
                   help="the cache folder (default $PIELAB_CACHE_DIR, else $XDG_CACHE_HOME/pielab or ~/.cache/pielab)")
    p.add_argument("--prune", action="store_true", help="remove entries and subsets not used within --older-than")
    p.add_argument("--older-than", metavar="AGE", help="with --prune: the age of last use that goes (default 30d)")
    p.add_argument("--keep-referenced", nargs="+", metavar="SWEEP_DIR",
                   help="with --prune: keep what these sweep folders' configs use")

    p = add("dashboard", cmd_dashboard, "optuna-dashboard over the sweep's study")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    return parser


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if argv is None and "ray" in sys.modules:
        # The program itself (not an in-process call) after a sweep command: skip the interpreter's slow
        # teardown of Ray and torch (pielab.sweep.session.exit_process); exit handlers still run.
        from pielab.sweep.session import exit_process

        exit_process(code)
    return code


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PielabError as exc:
        for line in str(exc).splitlines() or [""]:  # a ConfigError lists every problem, one line each
            print(f"pielab: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:  # also pielab.sweep.signals.Stopped (SIGTERM, SIGUSR1) outside Tune's loop
        signum = getattr(exc, "signum", None)
        print(f"pielab: {getattr(exc, 'what', 'interrupted')}", file=sys.stderr)
        return exit_code_for_signal(signum) if signum else EXIT_INTERRUPTED

