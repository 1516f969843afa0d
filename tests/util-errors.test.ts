import { describe, expect, it } from 'vitest';
import { UserError, isUserError, oneLine, runCli } from '../src/util/errors.ts';

function harness(env: Record<string, string | undefined> = {}) {
  const out: string[] = [];
  let code: number | null = null;
  return {
    io: { write: (s: string) => void out.push(s), exit: (c: number) => void (code = c), env },
    text: () => out.join(''),
    code: () => code,
  };
}

describe('UserError', () => {
  it('is an Error with name UserError', () => {
    const e = new UserError('bad file');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('UserError');
    expect(isUserError(e)).toBe(true);
    expect(isUserError(new Error('x'))).toBe(false);
  });
  it('oneLine collapses newlines', () => {
    expect(oneLine(new Error('a\n  b\nc'))).toBe('a b c');
    expect(oneLine('plain')).toBe('plain');
  });
});

describe('runCli', () => {
  it('does nothing on success', async () => {
    const h = harness();
    await runCli(async () => {}, h.io);
    expect(h.text()).toBe('');
    expect(h.code()).toBe(null);
  });
  it('prints exactly one line for a UserError, exit 1, no stack', async () => {
    const h = harness();
    await runCli(async () => {
      throw new UserError('config.json: unsupported model_type "gpt2"');
    }, h.io);
    expect(h.text()).toBe('error: config.json: unsupported model_type "gpt2"\n');
    expect(h.code()).toBe(1);
  });
  it('prints one line plus a DEBUG hint for unexpected errors, exit 2', async () => {
    const h = harness();
    await runCli(async () => {
      throw new TypeError('x is undefined');
    }, h.io);
    const lines = h.text().trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe('error: unexpected failure: x is undefined');
    expect(lines[1]).toMatch(/DEBUG=1/);
    expect(h.text()).not.toMatch(/at .*\(/); // no stack frames
    expect(h.code()).toBe(2);
  });
  it('prints the stack with DEBUG=1', async () => {
    const h = harness({ DEBUG: '1' });
    await runCli(async () => {
      throw new TypeError('boom');
    }, h.io);
    expect(h.text()).toMatch(/TypeError: boom\n\s+at /);
    expect(h.code()).toBe(2);
  });
});
