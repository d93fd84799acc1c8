"""countnet's hyperparameter search: Ray Tune + Optuna (TPE) + ASHA, TensorBoard, export.

Modules, one job each:
- `space`: search-space YAML schema, validation, Optuna define-by-run function (no Ray);
- `overrides`: `countnet search --set`, a space's fixed fields from the command line (no Ray);
- `sampler`: the seeded TPE sampler, its random start sized to the search;
- `trainable`: the Ray Tune trainable around `countnet.train.fit`;
- `optuna_search`: OptunaSearch that records ASHA-stopped trials as PRUNED;
- `tensorboard`: per-trial TensorBoard scalars and hparams;
- `cluster`: joining Ray and failing fast on impossible resource requests;
- `search`: the Tuner, running and resuming a search;
- `results`: reading an experiment back (histories, best epoch, table);
- `export`: the best epoch's checkpoint as a bundle;
- `cli`: `countnet search` and `countnet export` (entry points; imports Ray only when run).

Importing this package does not import Ray.
"""
