"""countnet's hyperparameter search: Ray Tune + Optuna (TPE) + ASHA, TensorBoard, export.

Modules, one job each:
- `space`: search-space YAML schema and validation (no Ray);
- `optuna_space`: a space as Optuna's define-by-run function, and a trial's config back to
  TrainConfig (no Ray);
- `overrides`: `countnet search --set`, a space's fixed fields from the command line (no Ray);
- `sampler`: the seeded TPE sampler, its random start sized to the search;
- `trainable`: the Ray Tune trainable around `countnet.train.fit`;
- `optuna_search`: OptunaSearch that records ASHA-stopped trials as PRUNED;
- `scheduler`: ASHA with the `start_from` trials exempt;
- `tensorboard`: per-trial TensorBoard scalars and hparams;
- `progress`: the status line per trial event while a search runs;
- `cluster`: joining Ray for a search (quiet logs) and failing fast on impossible resource
  requests;
- `search`: building the Tuner and running a new search;
- `resume`: resuming a search (the private Ray attributes it sets are named there);
- `results`: the trials of an experiment as Ray records them (status, kept checkpoints; the rows
  and the trial model are `countnet.experiment`'s), the best checkpoint, the table;
- `export`: the best epoch's checkpoint as a bundle;
- `storage`: local or cloud (s3://) experiment files;
- `cli`: `countnet search` and `countnet export` (entry points; imports Ray only when run); the
  only module here that prints, besides the live status lines of `progress`.

Importing this package does not import Ray.
"""
