"""SentencePiece ('llama') GGUF tokenizers vs sentencepiece and transformers; BOS; encode_after.

Everything is built here: a tiny SentencePiece BPE trained with Llama 2's settings (byte
fallback, digits split, identity normalization, whitespace kept), written as llama.cpp writes a
GGUF vocabulary, and the same model loaded by transformers from its tokenizer.model.
"""

import io
import json
import random

import gguf
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from inversion_jax.errors import UserError
from inversion_jax.nn.tokenizer import Tokenizer

spm = pytest.importorskip('sentencepiece')
transformers = pytest.importorskip('transformers')

_COMMANDS = ['ls -la /tmp', 'nmap -sV -p 22,80 10.0.0.1', "grep -rn 'TODO' src/",
             "find . -name '*.py' -mtime +7", 'tar -xzvf archive.tar.gz', 'kill -9 1234',
             'curl -s https://example.com/api?q=1', 'ssh -i ~/.ssh/id_rsa user@host',
             "awk '{print $1}' file.txt", "sed -i 's/foo/bar/g' a.txt", 'chmod 755 run.sh',
             'docker run --rm -it ubuntu bash', 'ps aux | grep python', 'git commit -m "fix"',
             'nmap -sS -T4 192.168.1.0/24', 'nmap -A -oN scan.txt host']
_WORDS = ('the quick brown fox jumps over a lazy dog list all files in the directory show '
          'hidden process scan network ports on host open service version find large files '
          'older than days compress archive extract remove recursively').split()
_TRAINED_UNICODE = ['naïve café', 'Привет мир', 'x² + y²', '“quoted” — dash…']
# Characters the model never saw: they must fall back to <0xXX> bytes.
_UNSEEN = ['日本語のテキスト', 'مرحبا', '😀👍🏽', '👨‍👩‍👧', '①②③', 'Ⅻ ∑ → ∞', 'e\u0301', '\u00a0nbsp']
_PREFIXES = ['', 'Tool: nmap\nTask: scan all ports\n\n', 'Header line\n\n', 'Command:',
             'Tool: nmap\nTask: x\n\nCommand:', '### Examples\n\nTask: list files\nCommand: ls\n\n']


def _training_lines() -> list[str]:
  rng = random.Random(0)
  lines = []
  for _ in range(400):
    roll = rng.random()
    if roll < 0.4:
      lines.append(f'{rng.choice(_COMMANDS)} {rng.randint(0, 99999)}')
    elif roll < 0.8:
      words = ' '.join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
      lines.append(words.capitalize() + rng.choice('.!?,;:'))
    else:
      lines.append(rng.choice(_TRAINED_UNICODE + ['Tool: nmap', 'Task: scan ports', 'Command:',
                                                  '    indented  code', 'a  b   c    d',
                                                  '3.14 + 2.71 = 5.85', '$HOME/${VAR}']))
  return lines


def corpus() -> list[str]:
  """>= 200 strings: edge spacing, digits, byte-fallback unicode, commands with flags."""
  rng = random.Random(1)
  fixed = ['', ' ', '  ', '\n', '\n\n', ' \t\n ', 'a', ' a', 'a ', '  a  b', 'trailing   ',
           '    indented', 'line one\nline two\n', '\r\nwindows\r\n', '007', '1234567890',
           '3.14159', '-42', '99%', '(a+b)*[c]{d}', "it's", 'aaaaaaa', '      ', '.....',
           'Tool: nmap\nTask: x\n\nCommand: nmap -sV host', *_UNSEEN, *_TRAINED_UNICODE]
  parts = [*_COMMANDS, *_WORDS, *_UNSEEN, *_TRAINED_UNICODE, '--output=x.txt', '$(date +%s)']
  separators = [' ', '  ', '\t', '\n', ' \n ', '\r\n', '\n\n', '']
  generated = []
  for _ in range(220):
    chosen = rng.sample(parts, rng.randint(1, 4))
    text = ''.join(p + rng.choice(separators) for p in chosen)
    generated.append(rng.choice(['', ' ', '  ', '\n']) + text + str(rng.randint(0, 10**6)))
  return list(dict.fromkeys(fixed + generated))


@pytest.fixture(scope='module')
def sp_model(tmp_path_factory):
  """`(processor, path of tokenizer.model)` of a tiny Llama-2-style SentencePiece BPE."""
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_training_lines()), model_writer=proto, model_type='bpe',
      vocab_size=500, byte_fallback=True, split_digits=True, character_coverage=1.0,
      allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
      normalization_rule_name='identity', unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
      minloglevel=2)
  path = tmp_path_factory.mktemp('spm') / 'tokenizer.model'
  path.write_bytes(proto.getvalue())
  return spm.SentencePieceProcessor(model_file=str(path)), path


def _token_type(sp, index: int) -> int:
  """llama.cpp's token type of a piece, as its converter writes it."""
  for kind, test in ((2, sp.is_unknown), (3, sp.is_control), (6, sp.is_byte), (5, sp.is_unused)):
    if test(index):
      return kind
  return 1


def _write_llama_gguf(path, sp, add_bos: bool | None = True, model: str = 'llama'):
  writer = gguf.GGUFWriter(str(path), 'llama')
  writer.add_tokenizer_model(model)
  writer.add_tokenizer_pre('default')
  pieces = range(sp.get_piece_size())
  writer.add_token_list([sp.id_to_piece(i) for i in pieces])
  writer.add_token_scores([sp.get_score(i) for i in pieces])
  writer.add_token_types([_token_type(sp, i) for i in pieces])
  writer.add_bos_token_id(sp.bos_id())
  writer.add_eos_token_id(sp.eos_id())
  writer.add_unk_token_id(sp.unk_id())
  if add_bos is not None:
    writer.add_add_bos_token(add_bos)
  writer.add_add_eos_token(False)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


@pytest.fixture(scope='module')
def ours(sp_model, tmp_path_factory):
  return Tokenizer.from_gguf(_write_llama_gguf(tmp_path_factory.mktemp('gguf') / 't.gguf',
                                               sp_model[0]))


def _hf_dir(directory, model_path, settings):
  directory.mkdir(exist_ok=True)
  (directory / 'tokenizer.model').write_bytes(model_path.read_bytes())
  (directory / 'tokenizer_config.json').write_text(json.dumps(settings))
  return directory


@pytest.fixture(scope='module')
def hf_dir(sp_model, tmp_path_factory):
  return _hf_dir(tmp_path_factory.mktemp('hf'), sp_model[1], {'add_bos_token': True})


@pytest.fixture(scope='module')
def theirs(hf_dir):
  """transformers' fast tokenizer converted from tokenizer.model (AutoTokenizer's path)."""
  return transformers.AutoTokenizer.from_pretrained(str(hf_dir))


def test_ids_match_sentencepiece_and_transformers(ours, sp_model, theirs):
  texts = corpus()
  assert len(texts) >= 200
  got = ours.encode_batch(texts)
  assert got == [sp_model[0].encode(t) for t in texts]
  assert got == theirs(texts, add_special_tokens=False)['input_ids']
  assert ours.add_bos and ours.bos_id == 1 and ours.eos_ids == (2,)
  with_bos = [ours.encode(t, add_bos=ours.add_bos) for t in texts]
  assert with_bos == theirs(texts)['input_ids']
  byte_ids = {sp_model[0].piece_to_id(f'<0x{b:02X}>') for b in '日😀'.encode()}
  assert byte_ids <= set(ours.encode('日😀'))  # Unseen characters fall back to bytes.


def test_llama_tokenizer_class_drops_dummy_prefix_before_a_space(ours, hf_dir):
  """transformers' `LlamaTokenizer` class (its Metaspace prepends '▁' only when the text does not
  start with one) differs from sentencepiece on text that starts with a space, exactly by that
  dummy '▁'; elsewhere the ids are equal. We follow sentencepiece, as llama.cpp does."""
  llama = transformers.LlamaTokenizerFast.from_pretrained(str(hf_dir))
  texts = [t for t in corpus() if t != ' ']  # '' has no ids, so ' ' has no counterpart.
  for text, ids in zip(texts, llama(texts, add_special_tokens=False)['input_ids']):
    assert ids == ours.encode(text[1:] if text.startswith(' ') else text), repr(text)


def test_decode_round_trips_like_transformers(ours, theirs):
  texts = corpus()
  ids = [ours.encode(t, add_bos=True) for t in texts]
  assert ours.decode_batch(ids) == texts
  assert ours.decode_batch(ids) == theirs.batch_decode(ids, skip_special_tokens=True)
  assert ([ours.decode(i, skip_special_tokens=False) for i in ids]
          == theirs.batch_decode(ids, skip_special_tokens=False))


def test_special_tokens_in_text(ours, theirs):
  for text in ['hi</s> there<s>x', '<s> hi', '<unk>']:
    assert ours.encode(text) == theirs(text, add_special_tokens=False)['input_ids'], text


def test_add_bos_follows_the_gguf_flag(sp_model, tmp_path):
  sp = sp_model[0]
  flags = {'on.gguf': True, 'off.gguf': False, 'absent.gguf': None}
  found = {name: Tokenizer.from_gguf(_write_llama_gguf(tmp_path / name, sp, flag)).add_bos
           for name, flag in flags.items()}
  assert found == {'on.gguf': True, 'off.gguf': False, 'absent.gguf': True}


def test_hf_dir_ids_and_add_bos_follow_its_config(ours, sp_model, tmp_path):
  names = {'bos_token': '<s>', 'eos_token': '</s>'}
  found = [Tokenizer.from_hf_dir(_hf_dir(tmp_path / str(i), sp_model[1], {**names, **flag}))
           for i, flag in enumerate([{'add_bos_token': False}, {'add_bos_token': True}, {}])]
  assert [(tok.add_bos, tok.bos_id, tok.eos_ids) for tok in found] == [
      (False, 1, (2,)), (True, 1, (2,)), (True, 1, (2,))]
  texts = corpus()
  assert found[0].encode_batch(texts) == ours.encode_batch(texts)
  tok = Tokenizer(tokenizers.Tokenizer(models.BPE()), bos_id=None, eos_ids=[0], add_bos=True)
  assert not tok.add_bos  # Nothing to add.


@pytest.mark.parametrize('single, expected', [('<s> $A', True), ('$A', False)])
def test_hf_tokenizer_json_post_processor_decides_add_bos(ours, tmp_path, single, expected):
  backend = tokenizers.Tokenizer.from_str(ours.backend.to_str())
  backend.post_processor = processors.TemplateProcessing(single=single,
                                                         special_tokens=[('<s>', 1)])
  backend.save(str(tmp_path / 'tokenizer.json'))
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'bos_token': '<s>',
                                                               'eos_token': '</s>'}))
  assert Tokenizer.from_hf_dir(tmp_path).add_bos is expected


@pytest.fixture(scope='module')
def by_kind(ours):
  """Our SentencePiece tokenizer and a GPT-2 style byte-level BPE trained on the same lines."""
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=['<|endoftext|>'],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  backend.train_from_iterator(_training_lines() + ['\n\n'.join(_training_lines()[:50])], trainer)
  return {'sentencepiece': ours, 'byte-level': Tokenizer(backend, bos_id=None, eos_ids=[0])}


@pytest.mark.parametrize('kind', ['sentencepiece', 'byte-level'])
def test_encode_after_continues_the_prefix(kind, by_kind):
  tok = by_kind[kind]
  texts = ['nmap -sV host', ' nmap -sV host', 'ls -la /tmp\n', 'Привет 😀', '']
  for prefix in _PREFIXES:
    for text in texts:
      joined = tok.encode(prefix + text)
      assert tok.encode(prefix) + tok.encode_after(prefix, text) == joined, (prefix, text)
      if kind == 'byte-level' and prefix.endswith('\n'):
        assert tok.encode_after(prefix, text) == tok.encode(text)
  if kind == 'sentencepiece':  # No dummy '▁' mid-prompt: ' nmap' after ':' is '▁nmap'.
    assert tok.encode_after('Command:', ' nmap -sV host') == tok.encode('nmap -sV host')
    assert tok.encode_after('Task: x\n', 'ls') != tok.encode('ls')
  assert tok._prefix_ids.cache_info().hits > 0  # pylint: disable=protected-access


@pytest.mark.parametrize('kind', ['sentencepiece', 'byte-level'])
def test_encode_after_refuses_a_prefix_ending_mid_token(kind, by_kind):
  tok = by_kind[kind]
  with pytest.raises(UserError, match='token boundary') as error:
    tok.encode_after('Command: nm', 'ap -sV host')
  assert '\n' not in str(error.value)


def test_unsupported_gguf_tokenizer_model_is_one_line(sp_model, tmp_path):
  path = _write_llama_gguf(tmp_path / 't5.gguf', sp_model[0], model='t5')
  with pytest.raises(UserError, match="'t5' is not supported.*'gpt2'.*'llama'") as error:
    Tokenizer.from_gguf(path)
  assert '\n' not in str(error.value)


# The original's three prompt f-strings (intrinsic_self_improvement.py), verbatim.
ORIGINAL_GENERATE = ('You are a penetration testing expert. Generate ONLY the command, nothing '
                     'else.\n\nTool: {tool}\nTask: {task}\n\nCommand:')
ORIGINAL_INVERT = ('You are a penetration testing expert. Given this command, describe what task '
                   'it accomplishes in one sentence.\n\nTool: {tool}\nCommand: {command}\n\n'
                   'This command will:')
ORIGINAL_RATE = ('Rate how similar these two task descriptions are on a scale of 0 to 10.\nOnly '
                 'output a single number.\n\nTask 1: {task1}\nTask 2: {task2}\n\nSimilarity (0-10):')


@pytest.mark.slow
def test_faithful_round_prompts_are_transformers_ids(ours, theirs, monkeypatch):
  """A whole --preset=original scoring round on a tiny Llama with this SentencePiece
  tokenizer: every prompt the sampler sees is token for token what transformers'
  tokenizer makes of the original's prompt string (BOS included)."""
  from inversion_jax.decode import generation, prompts
  from inversion_jax.loop import experiment, presets
  from inversion_jax.nn import model as model_lib
  from inversion_jax.nn.config import ModelConfig
  from inversion_jax.scoring import inversion
  from inversion_jax.tasks import bank as bank_lib

  config = presets.apply(experiment.RunConfig(), 'original')
  graphdef, state = model_lib.create(ModelConfig.tiny(vocab_size=ours.vocab_size,
                                                      max_seq_len=1024), seed=0)
  gen = generation.Generator(graphdef, state, ours, add_bos=ours.add_bos, show_progress=False)
  seen = []  # (joined prompt text, the ids the sampler got) per row.
  split = gen._split_rows

  def spy(prefix, suffixes):
    head, rows = split(prefix, suffixes)
    seen.extend((prefix + s, [ours.bos_id, *head, *r]) for s, r in zip(suffixes, rows))
    return head, rows

  monkeypatch.setattr(gen, '_split_rows', spy)
  scorer = inversion.ScorerConfig(
      command_cleaning=config.scoring.command_cleaning,
      generation=config.generation.sampling(0.7, 100),
      reconstruction=config.generation.sampling(0.3, 50),
      rating=config.generation.sampling(0.1, 5))
  assert scorer.generation.top_k == 50 and not scorer.generation.stop_at_newline
  tasks = bank_lib.sample_tasks(bank_lib.named_bank('original'), 4, seed=0)
  batch = inversion.score_tasks(gen, prompts.get_style(config.generation.prompt_style), tasks, 2,
                                scorer, 0)
  expected = ([ORIGINAL_GENERATE.format(tool=r.task.tool, task=r.task.text) for r in batch.rows]
              + [ORIGINAL_INVERT.format(tool=r.task.tool, command=r.command) for r in batch.rows]
              + [ORIGINAL_RATE.format(task1=r.task.text, task2=r.reconstruction)
                 for r in batch.rows])
  assert sorted(text for text, _ in seen) == sorted(expected)  # Waves sort rows by length.
  for text, ids in seen:
    assert ids == theirs(text).input_ids, text
