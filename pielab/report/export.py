"""``pielab export``: the best trials' resolved configs as YAML that ``pielab train`` accepts.

Ranks through :mod:`.tables` (that is, :mod:`pielab.folder`'s rule), so the first exported
config is the best trial that ``pielab status`` and ``pielab report`` name. ``--pareto`` exports the
Pareto front of a multi-objective sweep instead (the folder's front, the one the report lists), one
config per trial, in the same file names as ``--top K``.
"""

from __future__ import annotations

import math
from pathlib import Path

from pielab.config import config_from_dict
from pielab.errors import PielabError
from pielab.files import write_atomic
from pielab.provenance import KEY as PROVENANCE, describe_device, describe_versions
from pielab.report.tables import load_sweep, number
from pielab.folder import test_acc_note
from pielab.folder.storage import local_dir
from pielab.text import fmt_value
from pielab.yamlfile import dump_yaml


def export_paths(out: Path, count: int) -> list[Path]:
    """``FILE`` for one config; ``FILE-stem_1.yaml`` .. ``_K.yaml`` beside it for K > 1 (one config per file,
    because ``pielab train`` takes a single-document YAML)."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{rank}.yaml") for rank in range(1, count + 1)]


def export_configs(sweep_dir: str | Path, top: int = 1, out: str | Path | None = None,
                   pareto: bool = False, damage: list[str] | None = None) -> list[Path]:
    """Write the best ``top`` finished trials' resolved configs as YAML that ``pielab train`` accepts.

    Each file is the trial's ``config.yaml`` validated through ``config_from_dict`` (so it trains as is,
    with its full ``train.epochs`` and its ``train.seed``), under a comment header that records the trial
    id, its best value of the sweep's metric, the epoch it was reached at (``best_epoch``), its best
    validation accuracy and the test accuracy (and which epoch's model that measured): to reproduce the
    trial, train the file and compare its metrics epoch by epoch up to ``best_epoch``. The trial's
    provenance (code version, library versions, device; :mod:`pielab.provenance`) follows as a
    ``provenance:`` section, which ``pielab train`` compares with its own machine.
    All files are rendered before any is written; each write is atomic.

    ``pareto``: export every Pareto-optimal trial instead of the top ``top`` (default file
    ``SWEEP_DIR/pareto_configs.yaml``, then ``pareto_configs_1.yaml`` .. ``_N.yaml`` for N > 1 trials);
    the header then also records each objective's value. ``damage``: a list that receives one line per
    damaged file of the folder (:mod:`pielab.folder.damage`); a trial with a damaged file is not exported.

    Raises:
        PielabError: ``top`` < 1, not a sweep folder, no finished trial yet, ``pareto`` for a sweep with
        one objective or no completed trial, or a config that no longer validates.
    """
    if top < 1:
        raise PielabError(f"--top must be at least 1, got {top}")
    sweep = load_sweep(sweep_dir)
    if damage is not None:  # one line per damaged file: a trial left out may have been the best
        damage.extend(sweep.folder.damage_lines())
    ranked = sweep.finished()
    counts = ", ".join(f"{n} {s}" for s, n in sweep.trials["state"].value_counts().items())
    if pareto:
        if not sweep.objectives:
            raise PielabError(f"{sweep.path}: sweep {sweep.name} has one objective ({sweep.metric}), so no Pareto "
                              "front; --pareto needs a spec with objectives: [...] (use --top K here)")
        if not sweep.pareto_ids:
            raise PielabError(f"{sweep.path}: no completed trial on the Pareto front yet ({counts})")
        ranked = sweep.trials.set_index("trial_id", drop=False).loc[sweep.pareto_ids].reset_index(drop=True)
    elif ranked.empty:
        raise PielabError(f"{sweep.path}: no completed trial to export yet ({counts})")
    else:
        ranked = ranked.head(top)
    default_name = "pareto_configs.yaml" if pareto else "best_configs.yaml"
    # a sweep on object storage exports locally, to ./SWEEP/<default_name>
    target = Path(out) if out is not None else local_dir(sweep.path) / default_name
    paths = export_paths(target, len(ranked))
    # Sweep trials with train.threads null run with their CPU share as torch's thread count, and a different
    # thread count changes float summation order: the header says so rather than altering the config.
    resources = sweep.spec.get("resources") if isinstance(sweep.spec.get("resources"), dict) else {}
    cpus = number(resources.get("cpu"))
    trial_threads = max(1, int(cpus)) if not math.isnan(cpus) else None
    files: dict[Path, str] = {}
    for rank, ((_, trial), path) in enumerate(zip(ranked.iterrows(), paths), start=1):
        try:
            config = config_from_dict(sweep.configs[trial["trial_id"]])
        except PielabError as exc:
            raise PielabError(f"trial {trial['trial_id']}: its config.yaml no longer validates: {exc}") from None
        sampled = ", ".join(f"{k}={fmt_value(trial[k])}" for k in sweep.hparams)
        what = f"Pareto trial {rank} of {len(ranked)}" if pareto else f"rank {rank} of {len(ranked)}"
        header = [
            f"# pielab export: {what} in sweep {sweep.name} ({sweep.path})",
            f"# trial: {trial['trial_id']} ({trial['state']}), seed {fmt_value(trial['seed'])}",
            f"# model: {trial['model']}, depth {fmt_value(trial['depth'])}, residual {fmt_value(trial['residual'])}",
            f"# best {sweep.metric} ({sweep.mode}): {fmt_value(trial['score'])}",
            *(f"# objective {m} ({d}) at the best epoch: {fmt_value(trial[m])}" for m, d in sweep.objectives),
            f"# best_epoch: {fmt_value(trial['best_epoch'])}",
            f"# best_val_acc: {trial['best_val_acc']:.4f}",
            f"# test_acc: {trial['test_acc']:.4f}  ({test_acc_note(trial['best_epoch'], trial['test_epoch'])})",
            f"# epochs_run: {fmt_value(trial['epochs'])} of train.epochs={config.train.epochs}",
        ]
        if sampled:
            header.append(f"# searched: {sampled}")
        recorded = sweep.records[trial["trial_id"]].provenance
        if recorded:
            header.append(f"# ran on: {describe_device(recorded.get('device'))}; {describe_versions(recorded)}")
        header.append(f"# train it: pielab train {path.name} --out DIR (it warns when this machine's versions differ)")
        if config.train.threads is None and trial_threads is not None:
            header.append(f"# the trial ran with {trial_threads} torch thread(s) (its resources.cpu); for a bitwise "
                          f"CPU reproduction add --set train.threads={trial_threads}")
        body = config.to_dict()
        if recorded:
            body[PROVENANCE] = recorded  # pielab.config accepts it; `pielab train` compares it with this machine
        files[path] = "\n".join(header) + "\n" + dump_yaml(body, sort_keys=False)
    for path, text in files.items():  # rendered all first: a config that fails to validate writes nothing
        write_atomic(path, text)
    return paths
