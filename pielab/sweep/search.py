"""Optuna search for Ray Tune, with early stopping told to Optuna as pruning.

Ray's :class:`~ray.tune.search.optuna.OptunaSearch` drives an Optuna study through the ask-and-tell
interface. When ASHA stops a trial early, Ray tells Optuna ``COMPLETE`` with the trial's *last,
low-fidelity* value (its ``on_trial_complete`` only chooses PRUNED when no value exists at all). TPE
then believes that a configuration stopped after one epoch at 35 % accuracy was fully trained to
35 %, and the density model for the "good" and "bad" groups mixes one-epoch and full-length values.

:class:`PielabOptunaSearch` keeps Ray's searcher (the define-by-run space, its trial
bookkeeping, read through :mod:`pielab.sweep.compat`, save/restore) and changes only the accounting:

* ``on_trial_result``: ``ot_trial.report(value, step=epoch)``: every epoch becomes an Optuna
  intermediate value, keyed by the training epoch (not Tune's ``training_iteration``, which counts
  reports and keeps counting across restarts).
* ``on_trial_complete``: a trial that ended before its full length without an error (stopped by the
  scheduler, or by the sweep's time budget) is told ``PRUNED``; Optuna then takes its last
  intermediate value as the trial's value and TPE treats it as pruned. A diverged trial (NaN loss)
  or an errored one is ``FAIL``. A full-length trial is ``COMPLETE`` with its *best* value over
  epochs (see ``_complete_value``).

**Several objectives** (a spec's ``objectives``: ``metric`` and ``mode`` are lists, the study has
``directions=[...]``). Optuna takes neither intermediate values nor a value for a pruned trial in a
multi-objective study, so the accounting is:

* every epoch folds into a :class:`~pielab.folder.TrialRecord` (the sweep folder's own rule): the
  trial's values are each objective's value at its best epoch by the first objective;
* a full-length trial is ``COMPLETE`` with those values (``FAIL`` if one is missing);
* an early-stopped trial (ASHA acts on the first objective; or the time budget) is ``PRUNED`` with no
  values (Optuna's multi-objective samplers then treat it as worse than any complete trial, and it is
  on no Pareto front); what it reached is kept as user attributes ``epochs`` and ``values_at_stop``
  (``{metric: value}``), so nothing measured is lost and nothing low-fidelity poses as final;
* failed and diverged trials are ``FAIL``, as for one objective.

So ``study.best_trials`` is the sweep folder's Pareto front (:func:`pielab.folder.pareto_records`).

Seed repeats (``seeds: [0, 1, 2]`` in a sweep spec) are one Optuna trial per (configuration, seed):
the first seed samples a configuration, the others are enqueued with the same parameters
(``study.enqueue_trial``), so every run is an honest Optuna trial and the seed is a user attribute,
never a hyperparameter that TPE would try to optimise.

Baselines (a spec's ``enqueue``) are the first configurations: each is enqueued
(``study.enqueue_trial``) when its group starts, so its seed repeats follow it and it reaches the
sampler as an ordinary trial. Outcome constraints (a spec's ``constraints``) are set on each trial
before it is told COMPLETE or PRUNED, with Optuna 5's ``Trial.set_constraint(str(constraint),
violation)`` (the ``constraints:<key>`` system attributes that ``FrozenTrial.constraints`` reads;
the older ``constraints_func`` is deprecated in Optuna 5.0): the violation of the trial's last
reported value of the metric, <= 0 when satisfied. TPE, GP and NSGA-II read them, and
``study.best_trials`` keeps the feasible trials only.

What the searcher learns from low-fidelity results (BOHB-style): every epoch is an intermediate value,
and an early-stopped trial is PRUNED at its last epoch. Optuna's TPE ranks pruned trials below the
complete ones, a trial stopped later above one stopped earlier, and by value within a step, so
trials stopped by ASHA or Hyperband still shape the "bad" density instead of being thrown away; GP
models COMPLETE trials only (its ``n_startup_trials`` count only those).
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from pielab.errors import ConfigError, PielabError
from pielab.sweep.compat import searcher_study, searcher_told, searcher_trials
from pielab.folder import (
    END_COMPLETED, END_EARLY, OPTUNA_DB, SEED_KEY, TrialRecord, end_state, is_finite_number, planned_epochs,
)
from pielab.spec.sweep_spec import ALGORITHMS, Constraint

logger = logging.getLogger(__name__)


def _flagged(result: dict[str, Any]) -> bool:
    """A trial's closing result for a diverged or failed run: it repeats the last epoch, no new value."""
    return bool(result.get("diverged") or result.get("failed"))


class Deadline:
    """The end of a sweep's time budget, shared by the stopper and the searcher.

    Tune's own ``time_budget_s`` terminates the running trials mid-epoch (the epoch's work is lost)
    and tells neither the callbacks nor the searcher. With this clock, the stopper ends each trial at
    its next epoch boundary through Tune's normal STOP path, and the searcher asks for no new trial
    once the time is up. Each run of a sweep (``pielab sweep``, each ``pielab resume``) gets the
    whole budget, as with Tune's.
    """

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.start_time: float | None = None
        self.spent: str | None = None  # why a resource budget ended it (exhaust), else None

    def start(self, at: float | None = None) -> None:
        self.start_time = time.time() if at is None else at
        self.spent = None

    def exhaust(self, reason: str) -> None:
        """End the budget now, whatever the clock says: the resource budget (``budget.cpu_hours`` /
        ``gpu_hours``) is spent. ``reason``: one line, kept in ``spent`` (None while it is not)."""
        self.spent = reason

    def left(self) -> float | None:
        """Seconds of budget left in this run (None before it starts or without a budget)."""
        if self.budget_s is None or self.start_time is None:
            return None
        return round(max(0.0, self.start_time + self.budget_s - time.time()), 1)

    def passed(self) -> bool:
        if getattr(self, "spent", None):  # getattr: a Deadline unpickled from before `spent` existed
            return True
        return (self.budget_s is not None and self.start_time is not None
                and time.time() >= self.start_time + self.budget_s)


class PielabOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch with early-stopped trials told to Optuna as PRUNED, and seed repeats.

    Args:
        space: the define-by-run function (a picklable :class:`~pielab.spec.space.SearchSpace`).
        metric, mode: the objective, such as ``"val/acc"`` and ``"max"``; lists of them (the first
            is the scheduler's) for a multi-objective study.
        sampler, storage, study_name: as for :class:`OptunaSearch` (storage: an ``RDBStorage``).
        base_epochs: the base config's ``train.epochs`` (a space may override it per trial).
        max_t: the scheduler's maximum epoch, or None; a trial is full length at
            ``min(train.epochs, max_t)`` epochs.
        seeds: each sampled configuration runs once per seed (``train.seed``); empty keeps the
            base config's seed.
        deadline: the sweep's time budget; once it has passed, ``suggest`` returns FINISHED.
        baselines: ``{dotted key: value as Optuna stores it}`` configurations that run first, in order
            (``SearchSpace.match`` gives them); each keeps the ``baseline`` user attribute (its index).
        constraints: outcome constraints, set on each trial (``Trial.set_constraint``) before it is
            told COMPLETE or PRUNED, from its last reported value of each constrained metric.
    """

    def __init__(
        self,
        space: Callable[[optuna.Trial], dict[str, Any]],
        *,
        metric: str | list[str],
        mode: str | list[str],
        sampler: optuna.samplers.BaseSampler,
        storage: optuna.storages.BaseStorage | None,
        study_name: str,
        base_epochs: int,
        max_t: int | None = None,
        seeds: Sequence[int] = (),
        deadline: Deadline | None = None,
        baselines: Sequence[dict[str, Any]] = (),
        constraints: Sequence[Constraint] = (),
    ) -> None:
        super().__init__(
            space=space, metric=metric, mode=mode, sampler=sampler, storage=storage, study_name=study_name
        )
        self._base_epochs = int(base_epochs)
        self._max_t = int(max_t) if max_t else None
        self._seeds = [int(s) for s in seeds]
        self._repeats: list[tuple[int, int, dict[str, Any]]] = []  # (group, seed, params) waiting to run
        self._groups = 0
        self._planned: dict[str, int] = {}
        self._last_step: dict[str, int] = {}
        self._best: dict[str, float] = {}
        self._deadline = deadline
        self._rdb = storage  # ours to keep: the same object Ray's searcher drives (one pickle, one copy)
        self._records: dict[str, TrialRecord] = {}  # multi-objective: each trial's values by the folder's rule
        self._baselines = [dict(b) for b in baselines]  # waiting to be enqueued, the next one first
        self._constraints = tuple(constraints)
        self._outcomes: dict[str, dict[str, float]] = {}  # trial id -> last value of each constrained metric

    @property
    def multi_objective(self) -> bool:
        return isinstance(self.metric, list)

    # ------------------------------------------------------------------ asking

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._deadline is not None and self._deadline.passed():
            return Searcher.FINISHED  # the time budget is spent: no new trials
        asked = searcher_trials(self)
        new_group = trial_id not in asked and not self._repeats
        if trial_id not in asked and self._repeats:
            group, seed, params = self._repeats.pop(0)
            # The next ask() returns this waiting trial: same parameters, the next seed.
            searcher_study(self).enqueue_trial(params, user_attrs={"seed": seed, "group": group})
        elif new_group and getattr(self, "_baselines", None):
            # Enqueued only now, so a seed repeat enqueued later never waits behind the other baselines.
            index = self._baseline_count() - len(self._baselines)
            searcher_study(self).enqueue_trial(self._baselines.pop(0), user_attrs={"baseline": index},
                                               skip_if_exists=False)
        config = super().suggest(trial_id)
        if config is None:
            return None
        ot_trial = searcher_trials(self)[trial_id]
        ot_trial.set_user_attr("trial_id", trial_id)  # links the Optuna trial to trials/<id>/ in the sweep folder
        if new_group:
            group, self._groups = self._groups, self._groups + 1
            seed = self._seeds[0] if self._seeds else None
            ot_trial.set_user_attr("group", group)
            if seed is not None:
                ot_trial.set_user_attr("seed", seed)
            for other in self._seeds[1:]:
                self._repeats.append((group, other, dict(ot_trial.params)))
        else:
            seed = ot_trial.user_attrs.get("seed")
        if seed is not None and SEED_KEY not in config:
            config[SEED_KEY] = seed
        self._planned[trial_id] = planned_epochs(config, self._base_epochs, self._max_t)
        return config

    def _baseline_count(self) -> int:
        if not hasattr(self, "_baselines_total"):
            self._baselines_total = len(self._baselines)
        return self._baselines_total

    # ------------------------------------------------------------------ telling

    def _observe_objectives(self, trial_id: str, result: dict[str, Any]) -> None:
        """Multi-objective: fold one epoch into the trial's record (Optuna takes no intermediate values)."""
        step = result.get("epoch")
        if step is None or int(step) <= self._last_step.get(trial_id, 0):
            return
        self._last_step[trial_id] = int(step)
        rec = self._records.setdefault(trial_id, TrialRecord(trial_id=trial_id, params={}))
        rec.add_result(result, self.metric[0], self.mode[0], self.metric)

    def _note_outcomes(self, trial_id: str, result: dict[str, Any]) -> None:
        """Keep the last value of each constrained metric that ``result`` reports."""
        for c in getattr(self, "_constraints", ()):
            value = result.get(c.metric)
            if is_finite_number(value):
                self._outcomes.setdefault(trial_id, {})[c.metric] = float(value)

    def _observe(self, trial_id: str, result: dict[str, Any]) -> None:
        """Report one epoch's value to Optuna once per epoch, and track the trial's best value."""
        if self.multi_objective:
            self._observe_objectives(trial_id, result)
            return
        value, step = result.get(self.metric), result.get("epoch")
        if not is_finite_number(value) or step is None:
            return
        step = int(step)
        if step <= self._last_step.get(trial_id, 0):
            return  # a retried trial repeats epochs it had already reported
        try:
            searcher_trials(self)[trial_id].report(float(value), step=step)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Told before a crash, after Tune's last snapshot: Tune reruns the trial, Optuna keeps
            # the outcome it already has.
            searcher_told(self).add(trial_id)
            return
        self._last_step[trial_id] = step
        better = max if self.mode == "max" else min
        self._best[trial_id] = better(self._best.get(trial_id, float(value)), float(value))

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in searcher_told(self) or trial_id not in searcher_trials(self) or _flagged(result):
            return
        self._note_outcomes(trial_id, result)
        self._observe(trial_id, result)

    def _complete_value(self, trial_id: str) -> float | None:
        # A full-length trial's value is its BEST epoch on the validation metric, not its last one:
        # pielab selects the best epoch on validation (``best/val_acc``; the test accuracy reported
        # for a trial is the one at that epoch), so Optuna optimises the number that reports and
        # exports use. Every COMPLETE trial has the same length, so the max-over-epochs bias is the
        # same for all of them; the per-epoch curve stays in the intermediate values.
        return self._best.get(trial_id)

    def classify(self, trial_id: str, result: dict[str, Any] | None, error: bool) -> str:
        """How a trial ended: completed, early_stopped, failed or diverged."""
        planned = self._planned.get(trial_id)
        if planned is None:
            planned = planned_epochs((result or {}).get("config") or {}, self._base_epochs, self._max_t)
        return end_state(result, error, planned)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        told = searcher_told(self)
        if trial_id in told or trial_id not in searcher_trials(self):
            return
        ot_trial = searcher_trials(self)[trial_id]
        if result and not error and not _flagged(result):
            # The result that made the scheduler stop the trial never went through on_trial_result.
            self._note_outcomes(trial_id, result)
            self._observe(trial_id, result)
            if trial_id in told:
                return
        end = self.classify(trial_id, result, error)
        value = None
        if self.multi_objective:
            rec = self._records.get(trial_id)
            value = rec.objective_values(self.metric) if rec is not None and end == END_COMPLETED else None
            state = TrialState.COMPLETE if value is not None else (
                TrialState.PRUNED if end == END_EARLY else TrialState.FAIL)
            if end == END_EARLY and rec is not None:
                self._set_stop_attrs(ot_trial, rec)
        elif end == END_COMPLETED:
            value = self._complete_value(trial_id)
            state = TrialState.COMPLETE if value is not None else TrialState.FAIL
        elif end == END_EARLY:
            state = TrialState.PRUNED
        else:
            state = TrialState.FAIL
        try:
            ot_trial.set_user_attr("end", end)
            if result and result.get("reason"):
                ot_trial.set_user_attr("reason", str(result["reason"])[:500])
            outcomes = getattr(self, "_outcomes", {}).pop(trial_id, {})
            if state in (TrialState.COMPLETE, TrialState.PRUNED):
                for c in getattr(self, "_constraints", ()):
                    ot_trial.set_constraint(str(c), c.violation(outcomes.get(c.metric)))
            searcher_study(self).tell(ot_trial, value, state=state)
        except RuntimeError as exc:
            # GridSampler calls study.stop() once the grid is exhausted, which raises outside optimize();
            # Optuna has stored the trial's state by then (in tell's finally), so nothing is lost.
            if "Study.stop" not in str(exc):
                logger.warning("could not record trial %s in Optuna: %s", trial_id, exc)
        except Exception as exc:  # a storage hiccup must not end the sweep
            logger.warning("could not record trial %s in Optuna: %s", trial_id, exc)
        told.add(trial_id)

    @staticmethod
    def _set_stop_attrs(ot_trial: optuna.Trial, rec: TrialRecord) -> None:
        try:
            ot_trial.set_user_attr("epochs", rec.epochs)
            ot_trial.set_user_attr("values_at_stop", dict(rec.objectives or {}))
        except Exception as exc:  # a storage hiccup must not end the sweep
            logger.warning("could not record trial %s in Optuna: %s", rec.trial_id, exc)

    def save(self, checkpoint_path: str) -> None:
        """Ray's save (the searcher's ``__dict__``), without the deadline: that belongs to each run."""
        state = self.__dict__.copy()
        state.pop("_deadline", None)
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore (keeping this run's deadline), then close the Optuna trials a crash orphaned.

        Tune saves the searcher with its experiment state; a trial suggested after the last save
        exists in the study (RUNNING) but in neither Tune nor the restored searcher, so nothing would
        ever tell it. It is told FAIL, with the reason as a user attribute, so the study shows no
        phantom running trials and samplers do not treat it as pending.
        """
        deadline = getattr(self, "_deadline", None)
        super().restore(checkpoint_path)
        self._deadline = deadline
        study, asked = searcher_study(self), searcher_trials(self)
        self._continue_sampler(study)
        finished = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        for trial_id, ot_trial in asked.items():
            if ot_trial.number in finished:
                searcher_told(self).add(trial_id)  # told after the snapshot: nothing more to tell
        known = {t.number for t in asked.values()}
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number in known:
                continue
            try:
                if self._rdb is not None:
                    set_trial_user_attr(self._rdb, study.study_name, frozen.number, "end", "orphaned")
                study.tell(frozen.number, state=TrialState.FAIL)
            except Exception:  # another process may own it (a shared RDB): leave it alone
                pass


    def _continue_sampler(self, study: optuna.Study) -> None:
        """Give the restored study a sampler rebuilt from its recipe, on a seed stream of its own.

        The recipe is the pickled sampler's (:class:`SamplerRecipe`), or, for a searcher pickled before
        samplers pickled as recipes (whose unpickled sampler may lack what its class now needs, such
        as Optuna 5.1 NSGA-II's lock), the running sweep's (:attr:`ActiveSweep.sampler`).
        """
        from pielab.sweep.active import active_sweep

        recipe = getattr(self._sampler, "pielab_recipe", None)
        if recipe is None:
            active = active_sweep()
            recipe = getattr(active, "sampler", None)
        if recipe is None or study is None:
            return
        sampler = build_sampler(recipe.continued(len(study.get_trials(deepcopy=False))))
        self._sampler = study.sampler = sampler


def tell_unreported(storage_url: str, study_name: str, ended: dict[str, str], mode: str,
                    records: dict[str, TrialRecord] | None = None, objectives: Sequence[str] = ()) -> None:
    """Tell Optuna how trials ended that Tune stopped without telling the searcher.

    Tune's ``time_budget_s`` (and any ``stop_all`` stopper) ends the running trials without calling
    ``on_trial_complete``, so their Optuna trials would stay RUNNING forever. ``ended`` maps Tune
    trial ids to how each ended (as :func:`~pielab.folder.end_state` says, or ``not_started``);
    the rules are the searcher's: early-stopped -> PRUNED, full length -> COMPLETE with the best
    value, anything else -> FAIL. A multi-objective study (``objectives``, two or more metrics) takes
    a completed trial's values from ``records`` (the sweep folder's records, by Tune trial id).
    """
    storage = make_storage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    better = max if mode == "max" else min
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        end = ended.get(t.user_attrs.get("trial_id"))
        if end is None:
            continue
        values = [v for _, v in sorted(t.intermediate_values.items()) if is_finite_number(v)]
        value, state = None, TrialState.FAIL
        rec = (records or {}).get(t.user_attrs.get("trial_id"))
        if len(objectives) > 1:
            value = rec.objective_values(objectives) if rec is not None and end == END_COMPLETED else None
            state = TrialState.COMPLETE if value is not None else (
                TrialState.PRUNED if end == END_EARLY else TrialState.FAIL)
            if end == END_EARLY and rec is not None:
                try:
                    set_trial_user_attr(storage, study_name, t.number, "epochs", rec.epochs)
                    set_trial_user_attr(storage, study_name, t.number, "values_at_stop", dict(rec.objectives or {}))
                except Exception as exc:
                    logger.warning("could not record trial %s in Optuna: %s", t.number, exc)
        elif end == END_EARLY:
            state = TrialState.PRUNED
        elif end == END_COMPLETED and values:
            value, state = better(values), TrialState.COMPLETE
        try:
            set_trial_user_attr(storage, study_name, t.number, "end", end)
            study.tell(t.number, value, state=state)
        except Exception as exc:
            logger.warning("could not record trial %s in Optuna: %s", t.number, exc)


# --------------------------------------------------------------------------- construction


def optuna_grid(space: Any) -> dict[str, list[Any]]:
    """The grid that ``optuna.samplers.GridSampler`` needs, in the values Optuna stores.

    Categorical choices appear as the labels the space suggests (non-primitive choices such as
    ``[3, 4, 6, 3]`` are YAML text); fixed parameters are never suggested and stay out of the grid.
    """
    grid = space.grid()
    out: dict[str, list[Any]] = {}
    for key, values in grid.items():
        param = space.param(key)
        if param.type == "fixed":
            continue
        out[key] = list(param.labels) if param.type == "categorical" else list(values)
    return out


@dataclass(frozen=True)
class SamplerRecipe:
    """What builds a sweep's Optuna sampler: the spec's ``search`` section, resolved.

    A sampler built from a recipe pickles as its recipe (see :class:`_Rebuilt`), never as the object:
    Tune pickles the searcher (``tuner.pkl``, the searcher state) and with it the sampler, and a sampler
    may hold what no pickle takes (Optuna 5.1's ``NSGAIISampler`` holds a ``threading.Lock``). What the
    samplers learn lives in the study, which is in the storage, so a rebuilt sampler continues it.

    ``algorithm``: one of ``ALGORITHMS``; ``seed``: the spec's ``search.seed`` (None: unseeded);
    ``options``: the sampler's extra keyword arguments; ``grid``: ``search.algorithm: grid``'s values
    as Optuna stores them (:func:`optuna_grid`); ``stream``: 0 for a sweep's first run, else the number
    of trials the study held when a resume rebuilt the sampler (see :meth:`continued`).
    """

    algorithm: str
    seed: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    grid: tuple[tuple[str, tuple[Any, ...]], ...] | None = None
    stream: int = 0

    def continued(self, n_trials: int) -> "SamplerRecipe":
        """The recipe for a sampler that continues a study of ``n_trials`` trials (a resume).

        A rebuilt sampler with the first run's seed would draw the first run's random numbers again
        (TPE's and NSGA-II's start-up trials would repeat the first configurations); a seed derived
        from (seed, n_trials) draws new ones, and the same folder resumed twice draws the same.
        """
        return replace(self, stream=int(n_trials))

    def effective_seed(self) -> int | None:
        if self.seed is None or self.stream == 0:
            return self.seed
        import numpy as np

        return int(np.random.SeedSequence([int(self.seed), self.stream]).generate_state(1)[0])


class _Rebuilt:
    """Mixed into each sampler class that :func:`build_sampler` makes: pickles as its recipe."""

    pielab_recipe: SamplerRecipe

    def __reduce__(self):
        return (build_sampler, (self.pielab_recipe,))


_REBUILT_CLASSES: dict[type, type] = {}


def _rebuilt_class(cls: type) -> type:
    if cls not in _REBUILT_CLASSES:
        _REBUILT_CLASSES[cls] = type(cls.__name__, (_Rebuilt, cls), {"__module__": cls.__module__,
                                                                     "__qualname__": cls.__qualname__})
    return _REBUILT_CLASSES[cls]


def make_sampler(algorithm: str, seed: int | None, options: dict[str, Any], space: Any) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler for ``search.algorithm``; extra ``search`` keys go to its constructor.

    The sampler pickles as its :class:`SamplerRecipe`. Raises ConfigError for an unknown algorithm, an
    option its constructor refuses, or a missing package (cmaes, scipy).
    """
    return build_sampler(sampler_recipe(algorithm, seed, options, space))


def sampler_recipe(algorithm: str, seed: int | None, options: dict[str, Any], space: Any) -> SamplerRecipe:
    """The :class:`SamplerRecipe` of a spec's ``search`` section over ``space`` (a SearchSpace)."""
    grid = None
    if algorithm == "grid":
        grid = tuple((k, tuple(v)) for k, v in optuna_grid(space).items())
    return SamplerRecipe(algorithm, seed, tuple(sorted((options or {}).items())), grid)


def build_sampler(recipe: SamplerRecipe) -> optuna.samplers.BaseSampler:
    """The sampler a :class:`SamplerRecipe` describes (what unpickling a pickled sampler calls)."""
    algorithm, seed, options = recipe.algorithm, recipe.effective_seed(), dict(recipe.options)
    samplers = optuna.samplers
    if algorithm == "tpe":
        options.setdefault("constant_liar", True)  # parallel trials: running ones count as "bad" guesses
        cls = samplers.TPESampler
    elif algorithm == "gp":
        try:
            import scipy  # noqa: F401  (GPSampler fits its kernel with scipy and torch)
            import torch  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"search.algorithm gp needs {exc.name}: pip install {exc.name}") from None
        cls = samplers.GPSampler
    elif algorithm == "random":
        cls = samplers.RandomSampler
    elif algorithm == "grid":
        options["search_space"] = {k: list(v) for k, v in recipe.grid or ()}
        cls = samplers.GridSampler
    elif algorithm == "nsga2":
        cls = samplers.NSGAIISampler
    elif algorithm == "cmaes":
        try:
            import cmaes  # noqa: F401  (Optuna's CmaEsSampler needs it at sampling time)
        except ImportError:
            raise ConfigError("search.algorithm cmaes needs the cmaes package: pip install cmaes") from None
        cls = samplers.CmaEsSampler
    else:
        raise ConfigError(f"search.algorithm: {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    try:
        sampler = _rebuilt_class(cls)(seed=seed, **options)
    except TypeError as exc:
        raise ConfigError(f"search: option not accepted by the {algorithm} sampler: {exc}") from None
    sampler.pielab_recipe = recipe
    return sampler


def set_trial_user_attr(storage: optuna.storages.BaseStorage, study_name: str, number: int, key: str,
                        value: Any) -> None:
    """Set a user attribute of trial ``number`` of a study that may not be this process's to drive
    (a trial a crash orphaned, one Tune stopped without telling the searcher), through the public
    storage API: Optuna's ``Trial`` for it needs the storage's internal trial id."""
    study_id = storage.get_study_id_from_name(study_name)
    storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, number), key, value)


SWEEP_DB_URL = f"sqlite:///<the sweep folder>/{OPTUNA_DB}"  # what a pickle holds for the folder's own study


class SweepStorage(optuna.storages.RDBStorage):
    """An RDBStorage whose pickles (Tune's ``tuner.pkl`` and searcher state) hold neither the
    database password nor the sweep folder's place on disk.

    Pickled, the URL is the spec's without its password, or :data:`SWEEP_DB_URL` for the folder's own
    ``optuna.db`` (``sweep_local``). Unpickled while a sweep runs in this process
    (:func:`pielab.sweep.active.running`), it connects to that sweep's URL now: the moved folder's
    ``optuna.db``, or the spec's URL (with the password this process was given, else libpq's
    PGPASSWORD / ~/.pgpass). Unpickled anywhere else (``Tuner.restore`` by hand), a folder-local
    storage stays unconnected and says so when used; a database URL connects as it is.
    """

    def __init__(self, url: str, *, sweep_local: bool = False, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.sweep_local = sweep_local

    def __getstate__(self) -> dict[Any, Any]:
        if "engine" not in self.__dict__:  # unconnected: pickles as it came
            return self.__dict__.copy()
        from pielab.folder import strip_password

        state = super().__getstate__()
        state["url"] = SWEEP_DB_URL if self.sweep_local else strip_password(state["url"])
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        from pielab.sweep.active import active_sweep

        active = active_sweep()
        if active is not None:
            state = {**state, "url": active.optuna_url}
        elif state.get("url") == SWEEP_DB_URL:
            self.__dict__.update(state)  # unconnected: this process runs no sweep to say where the folder is
            return
        super().__setstate__(state)

    def __getattr__(self, name: str) -> Any:
        # Only for attributes that are missing: the connection of an unconnected storage.
        if name in ("engine", "scoped_session"):
            raise PielabError(f"this Optuna storage was unpickled outside a running sweep: its study is in "
                              f"the sweep folder's {OPTUNA_DB} (continue the sweep with `pielab resume SWEEP_DIR`)")
        raise AttributeError(name)


CONNECT_TIMEOUT_S = 10


def check_storage(url: str) -> None:
    """Open the study database ``url`` once and close it, so that a server that does not answer (or
    refuses the login) is one line before Ray starts, not after. Raises ConfigError as :func:`make_storage`."""
    make_storage(url).engine.dispose()


def make_storage(url: str, *, sweep_local: bool = False) -> optuna.storages.RDBStorage:
    """A :class:`SweepStorage` for ``url`` (Ray's OptunaSearch needs an instance, not a URL string).

    ``sweep_local``: ``url`` is the sweep folder's own ``optuna.db`` (pickles then name no path).
    Raises ConfigError (password masked) when the database cannot be opened.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql", "mysql")):
        # a server that takes the connection and never answers (a proxy, a hung server): one line after
        # 10 s; without it psycopg waits for ever
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    try:
        return SweepStorage(url, sweep_local=sweep_local, **kwargs)
    except Exception as exc:
        from pielab.folder import mask_password

        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"storage.optuna: cannot open {mask_password(url)!r}: {mask_password(first)}") from None


# --------------------------------------------------------------------------- warm start (pielab sweep --from)

WARM_FROM_ATTR = "warm_start_from"  # user attribute of a copied trial: "<old study>#<old trial number>"


def warm_start(storage: optuna.storages.BaseStorage, study_name: str, mode: str | Sequence[str], space: Any,
               source: optuna.study.Study, constraints: Sequence[Constraint] = (),
               outcomes: dict[str, dict[str, Any]] | None = None, *, metrics: Sequence[str] = (),
               source_metrics: Sequence[str] = ()) -> dict[str, int]:
    """Create the study ``study_name`` and give it ``source``'s finished trials first (``add_trials``),
    so TPE and GP start from what the old sweep learned.

    Each COMPLETE or PRUNED trial is copied with its state, value and intermediate values (the
    low-fidelity curve), its parameters re-expressed in the new space's distributions
    (:meth:`SearchSpace.match` with ``complete``). Skipped: a trial with a parameter the new space
    does not search, a value outside its new range or choices, or an active parameter it never had
    (``outside``). With ``constraints``, each copied trial gets its constraint values: the old trial's
    own for the same constraint, else computed from its last reported metrics (``outcomes``: the old
    sweep's Tune trial id -> its last epoch's metrics and ``model/params``); a trial with neither is
    skipped (``unconstrained``: GP needs every trial to have every constraint).
    Failed and unfinished trials are not copied (``not_finished``). Returns those counts and ``added``.

    ``mode``: the new study's direction (``"max"``/``"min"``), or one per objective. ``metrics``: the new
    sweep's objective metrics, in order (needed with several objectives on either side);
    ``source_metrics``: ``source``'s, in its order. A multi-objective source gives each copied trial the
    values of the new study's objectives, taken by metric name (every one of them must be among the
    source's: :class:`ConfigError` otherwise), so two-objective -> one-objective keeps the first value.
    """
    modes = [mode] if isinstance(mode, str) else list(mode)
    new_metrics = list(metrics) or list(source_metrics[:1])
    if len(source_metrics) > 1 or len(modes) > 1:
        missing = [m for m in new_metrics if m not in source_metrics] if len(source_metrics) > 1 else new_metrics[1:]
        if missing or len(new_metrics) != len(modes):
            raise ConfigError(f"warm start: study {source.study_name} has no values for {', '.join(missing)}")
    picks = [list(source_metrics).index(m) for m in new_metrics] if len(source_metrics) > 1 else None
    directions = ["maximize" if m == "max" else "minimize" for m in modes]
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                **({"directions": directions} if len(directions) > 1 else {"direction": directions[0]}))
    keys = [str(c) for c in constraints]
    counts = {"added": 0, "outside": 0, "unconstrained": 0, "not_finished": 0}
    copies = []
    for old in source.get_trials(deepcopy=False):
        if old.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            counts["not_finished"] += 1
            continue
        params, dists, problems = space.match(old.params, labels=True, complete=True)
        if problems:
            counts["outside"] += 1
            continue
        last = (outcomes or {}).get(old.user_attrs.get("trial_id"), {})
        violations = {}
        for c, key in zip(constraints, keys):
            if key in old.constraints:
                violations[key] = old.constraints[key]
            elif is_finite_number(last.get(c.metric)):
                violations[key] = c.violation(last[c.metric])
        if len(violations) < len(keys):
            counts["unconstrained"] += 1
            continue
        user_attrs = {k: v for k, v in old.user_attrs.items() if k not in ("trial_id", "group", "baseline")}
        user_attrs[WARM_FROM_ATTR] = f"{source.study_name}#{old.number}"
        values_now = None  # FrozenTrial.value raises for a multi-objective trial: read values
        if picks is None:
            values_now = None if old.values is None else [old.values[0]]
        elif old.values is not None:
            values_now = [old.values[i] for i in picks]
        copies.append(optuna.trial.create_trial(
            state=old.state, values=values_now, params=params, distributions=dists, user_attrs=user_attrs,
            system_attrs={f"constraints:{k}": v for k, v in violations.items()},
            intermediate_values=dict(old.intermediate_values),
        ))
    study.add_trials(copies)
    counts["added"] = len(copies)
    return counts
