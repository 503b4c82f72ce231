"""The sweep folder: where a sweep lives and what it holds, readable and writable without Ray, Optuna or
W&B. Below ``pielab.data`` and ``pielab.train`` in the import order (it imports only ``pielab.errors``,
``files``, ``text`` and ``yamlfile``), so that every reader and writer (the Tune callback, the trainable,
the commands, the report, the cache command, ``pielab.train``) takes each file name, state and key from here.

- :mod:`~pielab.folder.layout`: the format (its docstring), file names, states, keys, ``status.json`` ends,
  the study URL rule;
- :mod:`~pielab.folder.records`: :class:`TrialRecord`, ranking, the Pareto front, accounting, budgets,
  ``results.csv``;
- :mod:`~pielab.folder.reader`: :class:`SweepFolder`, the one reader;
- :mod:`~pielab.folder.storage`: a local/NFS path or ``s3://`` / ``gs://`` through ``pyarrow.fs``;
- :mod:`~pielab.folder.lease`, :mod:`~pielab.folder.dblease`: one driver per folder;
- :mod:`~pielab.folder.started_spec`: the spec a sweep started with.

The names of layout, records, reader and the path helpers of storage are re-exported here.
"""

from __future__ import annotations

from pielab.folder.layout import (  # noqa: F401
    END_COMPLETED, END_EARLY, END_FAILED, END_DIVERGED, EPOCHS_KEY, mask_password, strip_password, is_finite_number,
    planned_epochs, end_state, SWEEP_FILE, STATUS_FILE, RESULTS_FILE, TRIALS_DIR, TUNE_DIR, TUNER_FILE, OPTUNA_DB, CONFIG_FILE,
    METRICS_FILE, RESULT_FILE, STUDY_KEY, WARM_START_FILE, STARTED_SPEC_FILE, LEASE_FILE,
    END_FINISHED, END_BUDGET, END_SWEEP_FAILED, END_RESOURCE_BUDGET, END_INTERRUPTED, END_TERMINATED, END_USR1,
    END_STOPPED, END_BY_SIGNAL, FINISHED_ENDS, END_CRASHED, CRASH_KEY, RUNNING, STATES, ENDED_STATES,
    FINISHED_STATES, FAILED_STATES, STATE_LABELS, METRIC_KEYS, PARAMS_KEY, PROVENANCE_KEY, SEED_KEY, study_url,
)
from pielab.folder.records import (  # noqa: F401
    csv_text, now_iso, TrialRecord, test_acc_note, read_metrics_csv, rank_records, best_record, pareto_records,
    summarize_records, trial_resources, recorded_slot_seconds, held_seconds, resource_usage, BUDGET_KEYS,
    budget_reached, results_rows, write_results_csv,
)
from pielab.folder.reader import (  # noqa: F401
    load_records, metric_mode, objectives_of, study_name, SweepFolder, SWEEP_STATES,
)
from pielab.folder.storage import (  # noqa: F401
    ObjectPath, SweepPath, is_remote, location, read_json, read_text, write_atomic, write_json,
)
