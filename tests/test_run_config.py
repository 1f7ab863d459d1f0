"""RunConfig's groups and its flat form: one name per setting, stored runs read back alike."""

import json
import pathlib

import pytest

from inversion_jax.errors import UserError
from inversion_jax.loop import run_config
from inversion_jax.loop.run_config import RunConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Runs stored before the settings were grouped (flat run_config.json, the study's included).
STORED = sorted(ROOT.glob('benchmarks/study2/*/run_config.json'))


def test_every_flat_name_is_unique_and_no_group_shadows_one():
  names = [field.name for kind in run_config.GROUPS.values()
           for field in run_config.dataclasses.fields(kind)]
  top = [name for name in run_config.flat_fields() if name not in names]
  assert len(names) == len(set(names)) and not set(names) & set(top)
  assert not set(run_config.GROUPS) & set(run_config.flat_fields())


def test_flat_and_grouped_construction_agree():
  flat = RunConfig(cycles=3, lr=1e-3, top_k=7, filter='reproducibility', repro_m=3)
  grouped = RunConfig(cycles=3, train=run_config.TrainSettings(lr=1e-3),
                      generation=run_config.GenerationSettings(top_k=7),
                      selection=run_config.SelectionSettings(filter='reproducibility',
                                                             repro_m=3))
  assert flat == grouped and hash(flat) == hash(grouped)
  assert (flat.train.lr, flat.generation.top_k, flat.selection.repro_m) == (1e-3, 7, 3)
  assert RunConfig(**flat.as_dict()) == flat
  # A flat name given beside its group wins over the group's value, in either order.
  assert RunConfig(lr=5e-4, train=run_config.TrainSettings(lr=1e-3)).train.lr == 5e-4
  assert flat.replace(lr=5e-4, name='x').train.lr == 5e-4


def test_bad_keywords_are_type_errors():
  with pytest.raises(TypeError, match="no setting 'cyclez'"):
    RunConfig(cyclez=3)
  with pytest.raises(TypeError, match='TrainSettings'):
    RunConfig(train=run_config.LoraSettings())


@pytest.mark.parametrize('group, settings, message', [
    (run_config.GenerationSettings, dict(top_p=2.0), '--top_p must be in'),
    (run_config.TrainSettings, dict(lr=1.0), '--lr=1.0 is above'),
    (run_config.LoraSettings, dict(lora_dropout=1.0), '--lora_dropout must be in'),
    (run_config.EvalSettings, dict(eval_every=-1), '--eval_every must be >= 0'),
    (run_config.MonitorSettings, dict(goodhart_tolerance=0.0), '--goodhart_tolerance'),
    (run_config.DeviceSettings, dict(shard_params=True), '--shard_params needs --parallel=mesh'),
    (run_config.ScoringSettings, dict(weights=(1.0, 1.0, 1.0)), 'weights'),
])
def test_each_group_checks_its_own_settings(group, settings, message):
  group().validate()  # The defaults pass.
  with pytest.raises(UserError, match=message):
    group(**settings).validate()
  with pytest.raises(UserError, match=message):  # And the whole config through it.
    RunConfig(**settings).validate()


def test_selection_builds_its_filter_with_the_runs_seed():
  settings = run_config.SelectionSettings(filter='random_matched', threshold=0.2)
  assert settings.filter_settings(seed=7) == {'threshold': 0.2, 'seed': 7}
  assert settings.make_filter(seed=7) is not None
  with pytest.raises(UserError, match='--threshold must be in'):
    run_config.SelectionSettings(threshold=1.5).validate()


@pytest.mark.skipif(not STORED, reason='no stored study run in this checkout')
@pytest.mark.parametrize('path', STORED, ids=lambda p: p.parent.name)
def test_a_run_stored_in_the_flat_form_reads_back_unchanged(path):
  stored = json.loads(path.read_text())
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
  config = RunConfig(**values)
  config.validate()
  assert json.loads(json.dumps(config.as_dict())) == stored


def test_a_flags_help_names_its_group():
  from absl import flags
  from inversion_jax.loop import run_flags
  flag_values = flags.FlagValues()
  run_flags.define(flag_values)
  assert flag_values['lr'].help.startswith('[train] AdamW learning rate')
  assert flag_values['cycles'].help.startswith('Rounds of')  # The top level: no group.
  assert set(flag_values) >= set(run_config.flat_fields())
