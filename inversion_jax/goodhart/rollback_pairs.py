"""Rollback measured: `--on_goodhart=rollback` runs paired with their `warn` twins.

A pair is two runs whose settings agree except the monitor's (`on_goodhart`,
`goodhart_tolerance`: a `warn` run trains the same under any δ, its monitor only marks
records) and name/output/resume, so by seed within a mechanism. Per pair: the final
held-out graded quality (rollback minus warn) and the rounds lost (per rollback, the alarm
round minus the round rolled back to: training thrown away). Over all pairs and per
mechanism: the mean with a Student-t 95 % interval.
"""

import json
import os
import re

import numpy as np
from scipy import stats

from inversion_jax.errors import UserError
from inversion_jax.goodhart import metrics

PAIRING_IGNORES = ('on_goodhart', 'goodhart_tolerance', 'name', 'output', 'resume')


def rollbacks(rounds: list[dict]) -> list[tuple[int, int]]:
  """[(alarm round, round rolled back to)] of a run's records."""
  return [(int(r['cycle']), int(r['goodhart']['rollback_to'])) for r in rounds
          if (r.get('goodhart') or {}).get('rollback_to') is not None]


def rounds_lost(rounds: list[dict]) -> int:
  """Rounds of training a run's rollbacks threw away."""
  return sum(alarm - target for alarm, target in rollbacks(rounds))


def final_quality(rounds: list[dict]) -> float | None:
  series = metrics.heldout_series(rounds, 'quality')
  return series[-1][1] if series else None


def _key(config: dict, defaults: dict, ignore=PAIRING_IGNORES) -> str:
  # Settings a run predates count as their defaults (the behaviour it had).
  config = json.loads(json.dumps(defaults)) | config
  return json.dumps({k: v for k, v in config.items() if k not in ignore}, sort_keys=True)


def _mechanism_names(pairs: list[dict]) -> dict:
  """Mechanism key -> a name: its rollback runs' common name, less the seed suffix."""
  names = {}
  for p in pairs:
    names.setdefault(p['mechanism'], []).append(os.path.basename(p['rollback'].rstrip('/')))
  out = {}
  for key, runs in names.items():
    out[key] = re.sub(r'_s\d*$', '', os.path.commonprefix(runs)) or runs[0]
  return out


def pair(warn: list[tuple], rollback: list[tuple], defaults: dict | None = None) -> list[dict]:
  """[(dir, config, rounds)] x 2 -> one record per rollback run and its warn twin."""
  defaults = defaults or {}
  twins = {}
  for run in warn:
    twins.setdefault(_key(run[1], defaults), run)
  out = []
  for run_dir, config, rounds in rollback:
    twin = twins.get(_key(config, defaults))
    if twin is None:
      raise UserError(f'{run_dir}: no --warn run with the same settings (seed '
                      f'{config.get("seed")}); a pair differs only in the monitor\'s settings')
    q_warn, q_back = final_quality(twin[2]), final_quality(rounds)
    out.append({'seed': config.get('seed'), 'warn': twin[0], 'rollback': run_dir,
                'mechanism': _key(config, defaults, PAIRING_IGNORES + ('seed',)),
                'final_quality_warn': q_warn, 'final_quality_rollback': q_back,
                'quality_difference': None if None in (q_warn, q_back) else q_back - q_warn,
                'rounds_lost': rounds_lost(rounds),
                'rollbacks': len(rollbacks(rounds))})
  names = _mechanism_names(out)
  for p in out:
    p['mechanism'] = names[p['mechanism']]
  return out


def mean_t(values) -> dict:
  """Mean and Student-t 95 % interval; None where undefined (fewer than 2 values)."""
  values = np.asarray([v for v in values if v is not None], np.float64)
  if not len(values):
    return {'mean': None, 'low': None, 'high': None, 'n': 0}
  mean = float(values.mean())
  if len(values) < 2:
    return {'mean': mean, 'low': None, 'high': None, 'n': 1}
  half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
  return {'mean': mean, 'low': mean - half, 'high': mean + half, 'n': len(values)}


def _means(pairs: list[dict]) -> dict:
  return {'quality_difference': mean_t([p['quality_difference'] for p in pairs]),
          'rounds_lost': mean_t([p['rounds_lost'] for p in pairs])}


def summary(pairs: list[dict]) -> dict:
  """Over all pairs, and per mechanism (pairs whose settings differ in the seed alone)."""
  mechanisms = sorted({p['mechanism'] for p in pairs})
  by_mechanism = {m: _means([p for p in pairs if p['mechanism'] == m]) for m in mechanisms}
  return _means(pairs) | {'by_mechanism': by_mechanism, 'pairs': pairs}


def markdown(result: dict) -> str:
  def cell(m):
    if m['mean'] is None:
      return 'n/a'
    return f'{m["mean"]:+.3f}' + ('' if m['low'] is None else
                                  f' [{m["low"]:+.3f}, {m["high"]:+.3f}]') + f' (n={m["n"]})'
  lines = ['| mechanism | seed | final quality warn | rollback | difference | rounds lost |',
           '|---|---|---|---|---|---|']
  for p in result['pairs']:
    lines.append(f'| {p["mechanism"]} | {p["seed"]} | '
                 f'{metrics.fmt(p["final_quality_warn"], ".3f")} | '
                 f'{metrics.fmt(p["final_quality_rollback"], ".3f")} | '
                 f'{metrics.fmt(p["quality_difference"], "+.3f")} | {p["rounds_lost"]} |')
  lines += ['', f'Final quality, rollback - warn: {cell(result["quality_difference"])}; '
            f'rounds lost: {cell(result["rounds_lost"])} (mean [Student-t 95 %]).']
  for name, means in result['by_mechanism'].items():
    lines.append(f'- {name}: quality {cell(means["quality_difference"])}; '
                 f'rounds lost {cell(means["rounds_lost"])}.')
  return '\n'.join(lines) + '\n'
