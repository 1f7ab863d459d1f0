"""What a run prints: a table per round and a few lines for the whole run."""

from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.records.history import RunHistory, round_seconds, summarize


def format_round_table(record: dict, previous: dict | None = None) -> str:
  """A short fixed-width console table for one round.

  Held-out lines compare with the last evaluation before this round: the base model
  (stored with round 1) or `previous`, the prior round's record.
  """
  get, fmt = metrics_lib.get, metrics_lib.fmt
  if record.get('train_skipped_reason'):
    loss = f'skipped ({record["train_skipped_reason"]})'
  else:
    loss = (f'{fmt(get(record, "train", "final_loss"), ".4f")} on '
            f'{int(get(record, "train", "num_examples") or 0)} examples')
  rows = [f'{"round " + str(record.get("cycle", "?")):<24}{"before":>8} {"after":>8}'
          f' {"delta":>8}']
  for metric in metrics_lib.ROUND_ROWS:
    before, after = get(record, 'before', metric.key), get(record, 'after', metric.key)
    if before is None and after is None:
      continue
    delta = None if before is None or after is None else after - before
    rows.append(f'  {metric.label:<22}{fmt(before, metric.spec):>8} {fmt(after, metric.spec):>8}'
                f' {fmt(delta, "+" + metric.spec):>8}')
  if record.get('after_skipped_reason'):
    rows.append(f'  after       skipped ({record["after_skipped_reason"]})')
  rows.append(f'  train loss  {loss}')
  if get(record, metrics_lib.BASE_PHASE, 'quality') is not None:
    earlier, label = (record, metrics_lib.BASE_PHASE), 'base'
  elif previous is not None and get(previous, metrics_lib.HELDOUT_PHASE, 'quality') is not None:
    earlier, label = (previous, metrics_lib.HELDOUT_PHASE), f'round {previous.get("cycle")}'
  else:
    earlier, label = None, ''
  if get(record, metrics_lib.HELDOUT_PHASE, 'quality') is not None:
    count = int(get(record, metrics_lib.HELDOUT_PHASE, 'num_graded') or 0)
    rows.append(f'  {"held-out (" + str(count) + " tasks, greedy)":<22}{label:>8} {"now":>8}'
                + (f' {"delta":>8}' if earlier else ''))
    for metric in metrics_lib.HELDOUT_ROWS + metrics_lib.INDICATOR_ROWS:
      now = get(record, metrics_lib.HELDOUT_PHASE, metric.key)
      was = get(earlier[0], earlier[1], metric.key) if earlier else None
      line = f'    {metric.label:<20}{fmt(was, metric.spec) if earlier else "":>8} '
      line += f'{fmt(now, metric.spec):>8}'
      if was is not None and now is not None:
        line += f' {fmt(now - was, "+" + metric.spec):>8}'
      rows.append(line)
  score = get(record, 'signal', 'score')
  if score is not None:
    reasons = record.get('early_warning') or []
    rows.append(f'  early warning  {int(score)} label-free signal(s) past their limits'
                + (': ' + '; '.join(reasons) if reasons else ''))
  timings = record.get('timings') or {}
  times = '  '.join(f'{k} {v:.1f}s' for k, v in timings.items() if k != 'total')
  rows.append(f'  time        {times}  total {round_seconds(record):.1f}s'.rstrip())
  return '\n'.join(rows)


def format_summary(history: RunHistory) -> str:
  """A few console lines for the whole run."""
  s = summarize(history.rounds)
  if not s['cycles_completed']:
    return 'no rounds completed'
  fmt = metrics_lib.fmt
  lines = [
      f'rounds completed  {s["cycles_completed"]} (seed {history.seed})',
      f'mean score        {fmt(s["first_before_mean_score"], ".3f")} -> '
      f'{fmt(s["last_after_mean_score"], ".3f")} '
      f'({fmt(s["score_relative_change_pct"], "+.1f")}%)',
      f'acceptance        {fmt(s["first_before_acceptance"], ".1%")} -> '
      f'{fmt(s["last_after_acceptance"], ".1%")}',
      f'train loss        {fmt(s["first_train_loss"], ".3f")} -> '
      f'{fmt(s["last_train_loss"], ".3f")}',
  ]
  if 'heldout_quality_first' in s:
    lines.append(
        f'real quality      {fmt(s["heldout_quality_first"], ".3f")} (round '
        f'{s["heldout_quality_first_round"]}) -> {fmt(s["heldout_quality_last"], ".3f")} (round '
        f'{s["heldout_quality_last_round"]}) ({fmt(s.get("quality_relative_change_pct"), "+.1f")}%)'
        f', strict {fmt(s["heldout_strict_first"], ".1%")} -> {fmt(s["heldout_strict_last"], ".1%")}')
    for metric in metrics_lib.HELDOUT_ROWS:
      if metric.key not in ('quality', 'strict') and f'heldout_{metric.key}_first' in s:
        lines.append(f'{metric.label:<18}{fmt(s[f"heldout_{metric.key}_first"], metric.spec)} -> '
                     f'{fmt(s[f"heldout_{metric.key}_last"], metric.spec)}')
    gap = s['goodhart_gap']
    lines.append(f'goodhart gap      {fmt(None if gap is None else 100 * gap, "+.1f")} points'
                 ' (score change - real quality change)')
  lines += [f'tokens generated  {s["total_tokens_generated"]:,}',
            f'total time        {s["total_seconds"]:.1f}s']
  return '\n'.join(lines)
