"""Building the Tune Tuner of a sweep from its spec: trainable, searcher, scheduler, RunConfig.

Tune keeps its experiment in ``<sweep>/tune`` (with its standard per-trial ``result.json``,
``progress.csv`` and TensorBoard event files, so Ray's own tools read a pielab sweep); the Optuna
study lives in ``<sweep>/optuna.db`` unless the spec's ``storage.optuna`` names another database.
A sweep folder on object storage (:mod:`pielab.folder.storage`) is Tune's ``storage_path`` on its
``pyarrow.fs`` filesystem; its study is always in ``storage.optuna``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pielab.folder import TUNE_DIR, is_remote, study_url
from pielab.folder.storage import tune_storage
from pielab.sweep.recorder import SweepRecorder, SweepStopper


def _trial_name(trial) -> str:
    return trial.trial_id


def tracking_settings(spec) -> dict[str, Any] | None:
    from pielab.sweep.tracking import resolve_mode

    t = spec.tracking
    mode = resolve_mode(t.wandb, t.mode)
    if mode == "disabled":
        return None
    return {"project": t.project, "entity": t.entity, "mode": mode, "group": spec.name,
            "tags": [spec.base.task, spec.base.model_name]}


def optuna_url(spec, sweep_dir: Path) -> str:
    """The study's storage URL for ``spec`` in ``sweep_dir``: :func:`pielab.folder.study_url`, the one rule."""
    return study_url(sweep_dir, spec.storage.optuna)


def trial_base(spec) -> dict:
    """The base config every trial starts from, with the thread count the trial will really use.

    A trial gets ``resources.cpu`` threads unless ``train.threads`` says otherwise; writing that into
    the config makes the recorded config (``trials/<id>/config.yaml``, W&B, exports) rerun bit for bit
    on CPU, where the thread count changes the floating-point reduction order.
    """
    base = spec.base.to_dict()
    if base["train"]["threads"] is None:
        base["train"]["threads"] = max(1, int(spec.resources.cpu))
    return base


def make_trainable(spec, sweep_dir: Path, base: dict[str, Any]):
    """The trial function with ``base`` (:func:`trial_base`, made once by the runner), the metric and the
    sweep folder bound, and its resources."""
    from ray import tune

    from pielab.sweep.trainable import run_trial

    # Several objectives: every closing result carries them all (Tune checks the searcher's metrics in each).
    metric = spec.objective_metrics if spec.multi_objective else spec.metric
    # A local folder as text; one on object storage as its ObjectPath (pickled as URI + endpoint).
    where = sweep_dir if is_remote(sweep_dir) else str(sweep_dir)
    fn = tune.with_parameters(run_trial, base=base, metric=metric, sweep_dir=where)
    return tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def make_searcher(spec, sweep_dir: Path, deadline=None):
    """PielabOptunaSearch over the spec's space, behind Tune's ConcurrencyLimiter (``max_concurrent``), in
    the search generator that lets the folder move (compat.MovableSearchGenerator).

    The study is named after the folder it starts in; its storage pickles without the password and,
    for the folder's own ``optuna.db``, without the folder's place on disk (see search.SweepStorage).
    """
    from ray.tune.search import ConcurrencyLimiter

    import optuna

    from pielab.sweep.compat import MovableSearchGenerator

    from pielab.sweep.search import PielabOptunaSearch, build_sampler, make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines
    searcher = PielabOptunaSearch(
        spec.space, sampler=build_sampler(sampler_recipe(spec)),
        # a multi-objective study takes lists (Ray's OptunaSearch then creates it with directions=[...])
        metric=spec.objective_metrics if spec.multi_objective else spec.metric,
        mode=spec.objective_modes if spec.multi_objective else spec.mode,
        storage=make_storage(optuna_url(spec, sweep_dir), sweep_local=not spec.storage.optuna), study_name=sweep_dir.name,
        base_epochs=spec.base.train.epochs, max_t=spec.max_t if spec.scheduler.name != "fifo" else None,
        seeds=spec.seeds, deadline=deadline, baselines=baselines(spec), constraints=spec.constraints,
    )
    return MovableSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent))


def sampler_recipe(spec):
    """The spec's ``search`` section as a :class:`~pielab.sweep.search.SamplerRecipe` (what the sweep's
    sampler is built from, and rebuilt from on a resume)."""
    from pielab.sweep.search import sampler_recipe as recipe

    return recipe(spec.search.algorithm, spec.search.seed, spec.search.sampler_options(), spec.space)


def baselines(spec) -> list[dict[str, Any]]:
    """The spec's ``enqueue`` configurations as Optuna stores them (categorical choices as labels)."""
    return [spec.space.match(b)[0] for b in spec.enqueue]


def make_scheduler(spec):
    """ASHA on the ``epoch`` attribute (rungs in training epochs), or FIFO.

    ``hyperband`` and ``asha`` with ``brackets`` are Ray's ASHAScheduler with several brackets:
    asynchronous Hyperband (Li et al., "A System for Massively Parallel Hyperparameter Tuning"), each
    new trial going to a bracket at random, bracket ``k`` first stopping trials at ``grace_period *
    reduction_factor**k`` epochs. Unlike Ray's synchronous ``HyperBandScheduler`` it never pauses a
    trial to wait for its bracket to fill, so a ConcurrencyLimiter smaller than a bracket cannot stall it.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler.name == "fifo":
        return FIFOScheduler()
    s = spec.scheduler
    return ASHAScheduler(time_attr="epoch", metric=spec.metric, mode=spec.mode, max_t=spec.max_t,
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor,
                         brackets=s.brackets or 1)


def make_tuner(spec, sweep_dir: Path, recorder: SweepRecorder):
    """A new Tuner for the sweep: its experiment in ``<sweep_dir>/tune``, ``recorder`` as its callback
    (the trainable gets the recorder's base config: the same dict the recorder resolves trials from)."""
    from ray import tune

    tune_config = tune.TuneConfig(
        search_alg=make_searcher(spec, sweep_dir, recorder.deadline),
        scheduler=make_scheduler(spec),
        num_samples=spec.num_trials,
        reuse_actors=True,  # a stopped trial's worker runs the next one: no new process, no re-import
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )
    storage_path, storage_filesystem = tune_storage(sweep_dir)
    run_config = tune.RunConfig(
        name=TUNE_DIR,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,  # None: a local path; else S3/GCS, credentials from the environment
        # Two, not one: Tune snapshots its experiment state after every num_to_keep checkpoints, and
        # with one a crash between writing epoch k+1 and that snapshot leaves the state pointing at
        # the deleted epoch k, so the trial cannot resume (seen in the kill-and-resume test).
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[recorder],
        stop=SweepStopper(recorder, recorder.deadline),  # the time budget (spec.time_budget_s) is here
        verbose=0,
        log_to_file=True,  # a trial's stdout/stderr go to tune/<trial>/ (log_to_driver is off)
    )
    return tune.Tuner(make_trainable(spec, sweep_dir, recorder.base), tune_config=tune_config, run_config=run_config)
