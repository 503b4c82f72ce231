"""``pielab sweep SPEC --from OLD_SWEEP``: a new study that receives an earlier sweep's trials first.

:func:`warm_source` opens the old folder's study after checking the two sweeps belong together (same task
and model unless the space searches ``model.name``, the same first objective, every new objective measured
by the old trials); :func:`warm_start_study` copies its trials into the new study
(:func:`pielab.sweep.search.warm_start`) and records what it copied in ``warm_start.json``.
"""

from __future__ import annotations

from pathlib import Path

from pielab.errors import ConfigError
from pielab.files import write_json
from pielab.folder import OPTUNA_DB, PARAMS_KEY, WARM_START_FILE, SweepFolder, load_records, study_url
from pielab.sweep.search import make_storage, warm_start


def warm_source(warm_from: str, spec):
    """``(study, folder)``: the Optuna study of the sweep folder ``warm_from`` (``pielab sweep --from``) and
    that folder, after checking it trained the same task and model (unless the new space searches
    ``model.name``), its first objective is the new one's and it measured every objective the new sweep
    optimises (two objectives -> one works, one -> two cannot); bad input raises (one line)."""
    import optuna

    old = SweepFolder.open(warm_from)
    base = old.spec.get("base") if isinstance(old.spec.get("base"), dict) else {}
    old_task, old_model = base.get("task"), (base.get("model") or {}).get("name")
    if old_task != spec.base.task or (old_model != spec.base.model_name and "model.name" not in spec.space.keys()):
        raise ConfigError(f"--from {warm_from}: that sweep trained {old_model} on {old_task}, this one "
                          f"{spec.base.model_name} on {spec.base.task}; its trials' values would mean something else here")
    if (old.metric, old.mode) != (spec.metric, spec.mode):
        raise ConfigError(f"--from {warm_from}: that sweep optimised {old.metric} ({old.mode}), this one "
                          f"{spec.metric} ({spec.mode}); its trials' values would mean something else here")
    old_objectives = old.objectives or [(old.metric, old.mode)]
    new_objectives = list(spec.objectives) or [(spec.metric, spec.mode)]
    unknown = [f"{m} ({d})" for m, d in new_objectives if (m, d) not in old_objectives]
    if unknown:
        had = ", ".join(f"{m} ({d})" for m, d in old_objectives)
        raise ConfigError(f"--from {warm_from}: that sweep's trials have values for {had} only, this one also "
                          f"optimises {', '.join(unknown)}")
    if old.optuna_storage is None and not (old.path / OPTUNA_DB).is_file():
        raise ConfigError(f"--from {warm_from}: no {OPTUNA_DB} in it (that sweep never asked Optuna for a trial)")
    url = old.study_url()
    try:
        return optuna.load_study(study_name=old.study, storage=make_storage(url)), old
    except KeyError:
        raise ConfigError(f"--from {warm_from}: no Optuna study named {old.study!r} in its storage") from None


def warm_start_study(spec, folder: Path, source, old: SweepFolder) -> str:
    """Give the new sweep's study ``source``'s trials first; record and describe what was copied."""
    storage = make_storage(study_url(folder, spec.storage.optuna), sweep_local=not spec.storage.optuna)
    outcomes = {}
    if spec.constraints:  # what the old trials reported last, for constraints their study never had
        for tid, rec in load_records(old.path).items():
            outcomes[tid] = {**(rec.rows[max(rec.rows)] if rec.rows else {}), PARAMS_KEY: rec.num_params}
    counts = warm_start(storage, folder.name, spec.objective_modes, spec.space, source, spec.constraints, outcomes,
                        metrics=spec.objective_metrics,
                        source_metrics=[m for m, _ in old.objectives] or [old.metric])
    write_json(folder / WARM_START_FILE, {"from_study": source.study_name, **counts})
    skipped = [f"{counts['outside']} outside this space"]
    if counts["unconstrained"]:
        skipped.append(f"{counts['unconstrained']} without values for the constraints")
    if counts["not_finished"]:
        skipped.append(f"{counts['not_finished']} failed or unfinished")
    return (f"warm start: {counts['added']} trials of study {source.study_name} go into the new study first "
            f"(skipped: {', '.join(skipped)})")
