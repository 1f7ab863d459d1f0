"""`import inversion_jax as ij`: a tiny round with the top-level names only."""

import pytest

import inversion_jax as ij
from tests.tiny_run import TINY_FLAGS


def test_every_exported_name_resolves():
  for name in ij.__all__:
    assert getattr(ij, name) is not None


@pytest.mark.slow
def test_a_tiny_round_with_the_public_names(tiny_gguf, tmp_path):  # noqa: F811
  config, params, tokenizer = ij.load_model(tiny_gguf)
  graphdef, state = ij.from_flat_params(config, params)
  generator = ij.Generator(graphdef, state, tokenizer, show_progress=False)
  out = generator.generate([('Tool: nmap\n', 'Task: scan\nCommand:')], ij.SamplingConfig(0.0, 4))
  assert len(out.texts) == 1
  history = ij.run(ij.RunConfig(**(TINY_FLAGS | dict(cycles=1, model=tiny_gguf,
                                                    output=str(tmp_path), name='api'))))
  assert len(history.rounds) == 1 and (tmp_path / 'api' / 'progress.json').exists()
  verdict = ij.validate('nmap', 'Scan 10.0.0.5 for open ports', 'nmap 10.0.0.5')
  assert verdict.ok and verdict.quality == 1.0
  assert not ij.validate("nmap", "Scan 10.0.0.5", "nmap --no-such-flag 10.0.0.5").ok
  assert len(ij.load_heldout('small')) == 36
  assert ij.get_filter('threshold', threshold=0.5).select  # The filter entry point.
