"""The search's Optuna sampler: seeded TPE whose random start is sized to the search.

Optuna's TPE samples at random until `n_startup_trials` trials have finished (COMPLETE or PRUNED),
and only then models good and bad configs. Its default, 10, is more than a laptop search has
trials (`make search` runs 6), which made the search a random search that ASHA prunes. So the
random start is a third of the trials, at least MIN_STARTUP_TRIALS: a 12-trial search samples 4
at random and 8 with TPE.
"""

from __future__ import annotations

import warnings

import optuna

# TPE's picks are drawn around the best finished trials so far; before 3 have finished those are
# one or two configs that say little about the space, so at least 3 are sampled at random.
MIN_STARTUP_TRIALS = 3
STARTUP_SHARE = 3  # one trial in this many is sampled at random before TPE takes over


def startup_trials(num_samples: int) -> int:
    """The random trials before TPE takes over: a third of the search, at least 3.

    Args:
        num_samples: the trials of the search.
    """
    return max(MIN_STARTUP_TRIALS, num_samples // STARTUP_SHARE)


def tpe_sampler(seed: int, num_samples: int) -> optuna.samplers.TPESampler:
    """Seeded multivariate TPE for a conditional space and trials that run at the same time.

    `group=True` models the parameters that occur together (a `when:` or `optional` field) as
    one group; `constant_liar=True` counts running trials as bad, so that concurrent trials do
    not all sample the same promising point. Both are what Optuna's docs recommend for such
    searches, and both are marked experimental (the warning is silenced).

    Args:
        seed: the sampler's seed.
        num_samples: the trials of the search; sets `n_startup_trials` (`startup_trials`).
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      constant_liar=True,
                                      n_startup_trials=startup_trials(num_samples))
