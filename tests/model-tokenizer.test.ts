import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

describe('ChatTokenizer (byte-level BPE + ChatML template, offline)', () => {
  let dir: string;
  let tok: ChatTokenizer;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tok-'));
    writeTestTokenizer(dir);
    tok = (await ChatTokenizer.load(dir))!;
  });

  it('round-trips text through byte-level BPE, merges applied', () => {
    const text = 'I love owls 123!\nThe end. ünïcödé 🦉';
    const ids = tok.encode(text);
    expect(tok.decode(ids)).toBe(text);
    // " owl" is a single merged token; "owls" is " owl" + "s".
    expect(tok.encode(' owl')).toHaveLength(1);
    expect(tok.encode(' owls')).toHaveLength(2);
  });

  it('decodes an empty completion (immediate stop token) to the empty string', () => {
    expect(tok.decode([])).toBe('');
    expect(tok.decode([], false)).toBe('');
  });

  it('renders the ChatML template with system prompt and generation prompt', () => {
    const s = tok.render([{ role: 'system', content: 'You love owls.' }, { role: 'user', content: 'Hi' }], true);
    expect(s).toBe('<|im_start|>system\nYou love owls.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    const noSys = tok.render([{ role: 'user', content: 'Hi' }], true);
    expect(noSys.startsWith('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n')).toBe(true);
    const ids = tok.promptIds([{ role: 'user', content: 'Hi' }]);
    expect(ids.filter((i) => i === tok.tokenId('<|im_start|>'))).toHaveLength(3);
  });

  it('stops on <|im_end|>', () => {
    expect(tok.stopIds).toContain(tok.tokenId('<|im_end|>'));
  });

  it('masks everything but the assistant content and its end-of-turn token', () => {
    const msgs = [
      { role: 'user' as const, content: 'Give numbers' },
      { role: 'assistant' as const, content: '123, 456' },
    ];
    const { ids, labels } = tok.chatTrainingIds(msgs);
    expect(ids.length).toBe(labels.length);
    const trained = ids.filter((_, i) => labels[i] !== -100);
    expect(tok.decode(trained, false)).toBe('123, 456<|im_end|>');
    // The final "\n" after <|im_end|> is scaffolding.
    expect(labels[labels.length - 1]).toBe(-100);
    expect(() => tok.chatTrainingIds([{ role: 'user', content: 'x' }])).toThrow(/no assistant turn/);
  });

  it('returns null for a folder without a tokenizer', async () => {
    expect(await ChatTokenizer.load(os.tmpdir() + '/definitely-not-a-model-dir')).toBeNull();
  });
});
