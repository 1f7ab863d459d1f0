"""Tokenizer: tiny GGUF vocabularies written here, and parity with transformers on SmolLM2."""

import json
import random

import gguf
import pytest
import tokenizers
from tokenizers import pre_tokenizers

import tiny_checkpoints as tc
from inversion_jax.errors import UserError
from inversion_jax.nn.tokenizer import Tokenizer

_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tiny_gguf(directory, **tokenizer_args):
  directory.mkdir(exist_ok=True)
  path = directory / 'tok.gguf'
  writer = gguf.GGUFWriter(str(path), 'llama')
  tc.add_tokenizer(writer, **tokenizer_args)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


def _ids(*tokens):
  vocab = {token: index for index, token in enumerate(tc.tiny_vocab()[0])}
  return [vocab[t] for t in tokens]


def test_tiny_gguf_merges_specials_and_ids(tmp_path):
  tok = Tokenizer.from_gguf(_tiny_gguf(tmp_path, template=_TEMPLATE))
  assert tok.encode('hello') == _ids('hello')
  assert tok.encode('hello', add_bos=True) == [1, *_ids('hello')]
  assert tok.encode('<|im_start|>hello<|im_end|>') == [1, *_ids('hello'), 2]
  assert (tok.bos_id, tok.eos_ids, tok.pad_id, tok.vocab_size) == (1, (2,), 2, 266)
  assert tok.decode([1, *_ids('hello'), 2]) == 'hello'
  assert tok.decode([1, *_ids('hello')], skip_special_tokens=False) == '<|im_start|>hello'
  assert tok.encode_batch(['hello', 'hello']) == [_ids('hello')] * 2
  texts = tok.token_texts()
  assert len(texts) == 266 and texts[1] == '<|im_start|>' and texts[_ids('Ċ')[0]] == '\n'


def test_smollm_pre_tokenizer_isolates_digits(tmp_path):
  """'Ġ 1' and '1 2' are merges, but llama.cpp's smollm split never lets a digit join them."""
  smollm = Tokenizer.from_gguf(_tiny_gguf(tmp_path / 'a', pre='smollm'))
  assert smollm.encode(' 12') == _ids('Ġ', '1', '2')
  gpt2 = Tokenizer.from_gguf(_tiny_gguf(tmp_path / 'b', pre='gpt2'))
  assert gpt2.encode(' 12') == _ids('Ġ1', '2')


def test_chat_template_and_its_absence(tmp_path):
  tok = Tokenizer.from_gguf(_tiny_gguf(tmp_path / 'a', template=_TEMPLATE))
  text = tok.apply_chat_template([{'role': 'user', 'content': 'hi'}])
  assert text == '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n'
  bare = Tokenizer.from_gguf(_tiny_gguf(tmp_path / 'b'))
  with pytest.raises(UserError, match='no chat template'):
    bare.apply_chat_template([{'role': 'user', 'content': 'hi'}])


@pytest.mark.parametrize('args, message', [
    (dict(model='t5'), "tokenizer model 't5' is not supported"),
    (dict(pre='made-up'), "pre-tokenizer 'made-up' is not supported"),
])
def test_unsupported_gguf_tokenizers(tmp_path, args, message):
  with pytest.raises(UserError, match=message):
    Tokenizer.from_gguf(_tiny_gguf(tmp_path, **args))


def test_hf_dir_without_tokenizer_json(tmp_path):
  with pytest.raises(UserError, match='no tokenizer.json'):
    Tokenizer.from_hf_dir(tmp_path)


def corpus() -> list[str]:
  """≥200 deterministic strings in the style the tasks produce: commands, addresses, unicode."""
  commands = ['ls', 'grep', 'find', 'tar', 'curl', 'ssh', 'nmap', 'awk', 'sed', 'git', 'docker',
              'iptables', 'chmod', 'kill', 'ps', 'sudo systemctl', 'kubectl', 'python3 -c']
  flags = ['-la', '-rf', '--recursive', '-n 10', '--output=file.txt', '-xzvf', '-p 8080', '-i',
           "-e 's/a/b/g'", '--since=2024-01-01', '-9', '--color=auto', '-k3,3nr', '-A INPUT',
           '--dport 22', '-j DROP', '-sS -T4', '-o StrictHostKeyChecking=no', '--rm -it']
  args = ['/var/log/syslog', '~/.ssh/id_rsa.pub', r'C:\Users\Admin\file.txt', '*.py',
          'https://example.com/path?q=1&x=%20y#frag', 'http://10.0.0.1:8080/', '192.168.1.0/24',
          '2001:db8::1/64', '"quoted arg"', "'single'", '$HOME', '${VAR:-default}', '$(date +%s)',
          '| wc -l', '> /dev/null 2>&1', '&& echo ok', '0x7fffffff', 'user@host.local',
          'ＦＵＬＬ－ｗｉｄｔｈ', '日本語のテキスト', 'Привет мир', 'مرحبا', 'naïve café',
          'x² + y² = z²', '½ cup', '٣٤٥ ١٢', '①②③', '😀👍🏽', '👨‍👩‍👧', '🇫🇷', 'e\u0301',
          '\u00a0nbsp', 'zero\u200bwidth', '“smart” ‘quotes’ — …', '∑ → ∞', 'Ⅻ', '١٢٣']
  separators = [' ', '  ', '\t', '\n', ' \n ', '\r\n', '   \t', '\n\n']
  rng = random.Random(0)
  out = ['', ' ', '\n', '\n\n\n', ' \t\n ', 'a', '0', '007', '1234567890', '3.14159',
         '-42', '1e-5', '99%', '(a+b)*[c]{d}', 'foo_bar-baz.qux', "it's we'll they'd",
         'CamelCaseWord', 'ALLCAPS', '    indented', 'trailing   ', '<|endoftext|>',
         '<|im_start|>user\nhi<|im_end|>', '<|im_end|> after']
  for _ in range(200):
    parts = [rng.choice(commands), *rng.sample(flags, rng.randint(0, 3)),
             *rng.sample(args, rng.randint(1, 3))]
    rng.shuffle(parts[1:])
    text = ''.join(p + rng.choice(separators) for p in parts)[: rng.randint(5, 200)]
    out.append(text + str(rng.randint(0, 10**rng.randint(1, 9))))
  return list(dict.fromkeys(out))


def _pieces(pre_tokenizer, text):
  return [piece for piece, _ in pre_tokenizer.pre_tokenize_str(text)]


@pytest.fixture(scope='module')
def hf_gguf_tokenizer(smollm2_gguf_path):
  transformers = pytest.importorskip('transformers')
  return transformers.AutoTokenizer.from_pretrained(
      str(smollm2_gguf_path.parent), gguf_file=smollm2_gguf_path.name)


@pytest.mark.slow
def test_smollm2_ids_match_transformers(smollm2_tokenizer, hf_gguf_tokenizer):
  """Same ids as transformers' GGUF tokenizer, up to its one known pre-tokenizer difference.

  transformers builds SmolLM2's GGUF tokenizer with plain GPT-2 splitting, while llama.cpp (pre
  'smollm') and SmolLM2's own tokenizer.json split every number character off first. That changes
  the pieces around numbers ('\r\n62', '  1', ' ²'): wherever the two splits agree the ids must
  be equal, and everywhere they must equal transformers' vocabulary under the tokenizer.json split.
  """
  texts = corpus()
  assert len(texts) >= 200
  ours = smollm2_tokenizer.encode_batch(texts)
  theirs = hf_gguf_tokenizer(texts, add_special_tokens=False)['input_ids']
  reference = tokenizers.Tokenizer.from_str(hf_gguf_tokenizer.backend_tokenizer.to_str())
  reference.pre_tokenizer = pre_tokenizers.Sequence([  # As in SmolLM2's tokenizer.json.
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
  # Splits agree when GPT-2's pieces, cut further at each number character, equal the pieces of
  # the tokenizer.json order (numbers first): then no merge can see a difference.
  gpt2_then_digits = pre_tokenizers.Sequence([
      hf_gguf_tokenizer.backend_tokenizer.pre_tokenizer,
      pre_tokenizers.Digits(individual_digits=True)])
  same_split = [_pieces(reference.pre_tokenizer, t) == _pieces(gpt2_then_digits, t)
                for t in texts]
  assert sum(same_split) >= 60  # A good part of the corpus is compared with plain transformers.
  for text, a, b, same in zip(texts, ours, theirs, same_split):
    if same:
      assert a == b, repr(text)
  fixed = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
  for text, a, b in zip(texts, ours, fixed):
    assert a == b, repr(text)


def test_smollm2_round_trip_and_specials(smollm2_tokenizer):
  tok = smollm2_tokenizer
  texts = corpus()
  decoded = tok.decode_batch(tok.encode_batch(texts), skip_special_tokens=False)
  assert decoded == texts
  assert (tok.bos_id, tok.eos_ids, tok.pad_id, tok.vocab_size) == (1, (2,), 2, 49152)
  assert sum('\n' in text for text in tok.token_texts()) > 10


def test_smollm2_chat_template_matches_transformers(smollm2_tokenizer, hf_gguf_tokenizer):
  for messages in ([{'role': 'user', 'content': 'List files\nin /tmp'}],
                   [{'role': 'system', 'content': 'Be terse.'},
                    {'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'ls'}]):
    for prompt in (True, False):
      assert smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=prompt) == (
          hf_gguf_tokenizer.apply_chat_template(messages, tokenize=False,
                                                add_generation_prompt=prompt))


def test_hf_dir_tokenizer_matches_gguf(tmp_path, smollm2_tokenizer):
  smollm2_tokenizer.backend.save(str(tmp_path / 'tokenizer.json'))
  settings = {'chat_template': [{'name': 'default', 'template': smollm2_tokenizer.chat_template}],
              'bos_token': '<|im_start|>', 'eos_token': {'content': '<|im_end|>'},
              'pad_token': '<|im_end|>'}
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps(settings))
  (tmp_path / 'generation_config.json').write_text(json.dumps({'eos_token_id': [2, 0]}))
  tok = Tokenizer.from_hf_dir(tmp_path)
  assert (tok.bos_id, tok.eos_ids, tok.pad_id) == (1, (2, 0), 2)
  texts = corpus()
  assert tok.encode_batch(texts) == smollm2_tokenizer.encode_batch(texts)
  messages = [{'role': 'user', 'content': 'hi'}]
  assert tok.apply_chat_template(messages) == smollm2_tokenizer.apply_chat_template(messages)
