"""Tests for prompt styles: shared prefixes, the original's exact text, exemplar hygiene."""

import re

import pytest

from inversion_jax.decode import prompts
from inversion_jax.errors import UserError
from inversion_jax.tasks import default_bank

STYLE_NAMES = ('original', 'fewshot')


def _all_kinds(style, rows):
  """One prompt per row for each kind, keyed by kind."""
  return {
      'generation': [style.generation(tool, task) for tool, task, _ in rows],
      'reconstruction': [style.reconstruction(tool, command) for tool, _, command in rows],
      'rating': [style.rating(task, command) for _, task, command in rows],
  }


ROWS = [('nmap', 'Scan 10.0.0.5 for open ports', 'nmap 10.0.0.5'),
        ('hydra', 'Brute force ssh on target.local', 'hydra -l root -P p.txt ssh://target.local')]


@pytest.mark.parametrize('name', STYLE_NAMES)
def test_prefix_is_shared_and_suffix_varies(name):
  style = prompts.get_style(name)
  for kind, rows in _all_kinds(style, ROWS).items():
    prefix = rows[0].prefix
    assert prefix.endswith('\n') and all(r.prefix == prefix for r in rows), kind
    assert rows[0].suffix != rows[1].suffix, kind
    assert all(r.text == prefix + r.suffix for r in rows), kind


def test_original_style_is_the_original_text():
  style = prompts.get_style('original')
  assert style.generation('nmap', 'Scan X').text == (
      'You are a penetration testing expert. Generate ONLY the command, nothing else.\n\n'
      'Tool: nmap\nTask: Scan X\n\nCommand:')
  assert style.reconstruction('nmap', 'nmap -sV X').text == (
      'You are a penetration testing expert. Given this command, describe what task it '
      'accomplishes in one sentence.\n\nTool: nmap\nCommand: nmap -sV X\n\nThis command will:')
  assert style.rating('A', 'B').text == (
      'Rate how similar these two task descriptions are on a scale of 0 to 10.\n'
      'Only output a single number.\n\nTask 1: A\nTask 2: B\n\nSimilarity (0-10):')


def test_original_training_text_is_the_original_template():
  prompt, completion = prompts.training_text('nmap', 'Scan X', 'nmap X', style='original')
  assert prompt + completion == 'Tool: nmap\nTask: Scan X\n\nCommand: nmap X'


@pytest.mark.parametrize('name', STYLE_NAMES)
def test_training_prompt_is_the_generation_suffix(name):
  style = prompts.get_style(name)
  prompt, completion = style.training_text('dirb', 'Scan X', 'dirb http://x')
  assert prompt == style.generation('dirb', 'Scan X').suffix
  assert completion == ' dirb http://x'


def test_fewshot_rows_end_where_the_model_continues():
  style = prompts.get_style('fewshot')
  assert style.generation('nmap', 'Scan X').suffix == 'Tool: nmap\nTask: Scan X\nCommand:'
  assert style.reconstruction('nmap', 'nmap X').suffix.endswith('\nTask:')
  assert style.rating('A', 'B').suffix.endswith('\nSimilarity (0-10):')


def test_generation_prompt_names_the_tool():
  for name in STYLE_NAMES:
    assert 'masscan' in prompts.get_style(name).generation('masscan', 'Scan X').suffix


def test_fewshot_headers_contain_each_exemplar_in_row_format():
  style = prompts.get_style('fewshot')
  for tool, task, command in prompts.FEWSHOT_GENERATION:
    assert f'Tool: {tool}\nTask: {task}\nCommand: {command}\n\n' in style.generation_head
  for tool, command, task in prompts.FEWSHOT_RECONSTRUCTION:
    assert f'Tool: {tool}\nCommand: {command}\nTask: {task}\n\n' in style.reconstruction_head
  for first, second, rating in prompts.FEWSHOT_RATING:
    assert f'Task 1: {first}\nTask 2: {second}\nSimilarity (0-10): {rating}\n\n' in (
        style.rating_head)


def test_exemplar_counts_and_rating_spread():
  for exemplars in (prompts.FEWSHOT_GENERATION, prompts.FEWSHOT_RECONSTRUCTION,
                    prompts.FEWSHOT_RATING):
    assert 4 <= len(exemplars) <= 6
  ratings = [r for _, _, r in prompts.FEWSHOT_RATING]
  assert len(set(ratings)) == len(ratings) and min(ratings) <= 2 and max(ratings) >= 8


def _exemplar_texts():
  """Every task and command string shown in the few-shot headers (not rating numbers)."""
  return ([t for ex in prompts.FEWSHOT_GENERATION for t in ex[1:]] +
          [t for ex in prompts.FEWSHOT_RECONSTRUCTION for t in ex[1:]] +
          [t for ex in prompts.FEWSHOT_RATING for t in ex[:2]])


def _leaks(values, texts):
  """Values that occur in a text as a whole item (not inside a longer number or address)."""
  return sorted(v for v in values for text in texts
                if re.search(rf'(?<![\w.]){re.escape(v)}(?!\w)', text))


def test_exemplars_share_no_value_with_the_heldout_pools():
  texts = _exemplar_texts()
  for slot, values in default_bank().slot_values('heldout').items():
    assert not _leaks(values, texts), slot


def test_exemplars_share_no_target_or_value_with_the_train_pools():
  texts = _exemplar_texts()
  generic = {'service', 'timing', 'top_n'}  # ssh etc. must be nameable in an exemplar.
  for slot, values in default_bank().slot_values('train').items():
    if slot not in generic:
      assert not _leaks(values, texts), slot


def test_leak_check_detects_a_leak():
  assert _leaks({'10.0.0.5', '22'}, ['Scan 10.0.0.5 on port 22']) == ['10.0.0.5', '22']
  assert not _leaks({'22', '10.0.0.5'}, ['Scan 10.0.0.50 on port 2222'])


def test_row_values_are_kept_on_one_line():
  prompt = prompts.get_style('fewshot').generation('nmap', 'Scan X\nand Y')
  assert prompt.suffix == 'Tool: nmap\nTask: Scan X and Y\nCommand:'


def test_unknown_style_is_a_user_error_listing_styles():
  with pytest.raises(UserError, match='fewshot, original'):
    prompts.get_style('chat')
