// scripts/logits.ts and scripts/generate.ts run as subprocesses on a random checkpoint folder with the
// offline test tokenizer: .npy vs the float64 reference, JSONL shape, and one-line errors.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu } from '../src/gpu/runtime.ts';
import { disposeLora, loadPeftAdapter, loraDims, writePeftAdapter, type HostLora } from '../src/model/adapter.ts';
import { loadWeightsF64, tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { SeedStreamRng } from '../src/util/rng.ts';
import { parseConfig } from '../src/model/config.ts';
import { sequenceLogits } from '../src/model/generate.ts';
import { referenceForward } from '../src/model/reference.ts';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';
import { readNpy } from '../src/util/npy.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'cli-gen-'));
const modelDir = path.join(tmp, 'model');
const adapterDir = path.join(tmp, 'adapter');
let vocab = 0;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(script: 'logits' | 'generate', args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--import', 'tsx', `scripts/${script}.ts`, ...args], { cwd: repoRoot, env: { ...process.env, DEBUG: '' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** stderr without the WebGPU adapter banner / Dawn warnings. */
const ownLines = (stderr: string) =>
  stderr
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('Warning: ') && !l.startsWith('webgpu: '));

function expectOneLineError(r: Run, re: RegExp) {
  const lines = ownLines(r.stderr);
  expect(r.code, r.stderr).not.toBe(0);
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  expect(lines[0]).toMatch(re);
  expect(lines[0]).not.toMatch(/unexpected failure/);
}

function randomLora(cfg: ReturnType<typeof parseConfig>): HostLora {
  const rng = new SeedStreamRng(8, 'cli-lora');
  const layers = Array.from({ length: cfg.layers }, () => {
    const { inDim, outDim } = loraDims(cfg, 'v_proj');
    return { v_proj: { A: rng.fillNormal(new Float32Array(4 * inDim), 0, 0.3) as Float32Array, B: rng.fillNormal(new Float32Array(outDim * 4), 0, 0.3) as Float32Array } };
  });
  return { rank: 4, alpha: 8, useRslora: false, targets: ['v_proj'], layers };
}

beforeAll(async () => {
  vocab = writeTestTokenizer(modelDir);
  const { config } = await writeRandomCheckpoint(modelDir, tinyConfigJson('qwen2', { vocab_size: vocab, eos_token_id: vocab - 1 }), { dtype: 'F32', seed: 5 });
  await writePeftAdapter(adapterDir, config, randomLora(config));
});

describe('scripts/logits.ts', () => {
  it('writes float32 [T, vocab] logits equal to the reference (--ids), and with an adapter (--text --chat)', async () => {
    const out1 = path.join(tmp, 'ids.npy');
    const out2 = path.join(tmp, 'chat.npy');
    const ids = [5, 17, 3, 200, 40, 2];
    const [r1, r2] = await Promise.all([
      run('logits', ['--model', modelDir, '--ids', ids.join(','), '--out', out1]),
      run('logits', ['--model', modelDir, '--adapter', adapterDir, '--text', 'the owl', '--chat', '--out', out2]),
    ]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r2.code, r2.stderr).toBe(0);
    const a = await readNpy(out1);
    expect(a.dtype).toBe('float32');
    expect(a.shape).toEqual([ids.length, vocab]);
    const ref = await loadWeightsF64(modelDir);
    const want = referenceForward(ref.config, ref.weights, ids).logits;
    let m = 0;
    for (let i = 0; i < want.length; i++) m = Math.max(m, Math.abs(a.data[i] as number - want[i]));
    expect(m).toBeLessThan(2e-3); // float32 GPU vs float64 reference, as in model-forward.test.ts
    // --chat: one user message + generation prompt; the adapter is applied (same as in-process).
    const tok = (await ChatTokenizer.load(modelDir))!;
    const chatIds = tok.promptIds([{ role: 'user', content: 'the owl' }]);
    const b = await readNpy(out2);
    expect(b.shape).toEqual([chatIds.length, vocab]);
    const gpu = await getGpu();
    const model = await Transformer.load(gpu, modelDir, { maxPositions: 256 });
    const lora = await loadPeftAdapter(gpu, adapterDir, model.cfg);
    const inProc = await sequenceLogits(model, chatIds, lora);
    const base = await sequenceLogits(model, chatIds);
    let d = 0;
    let dBase = 0;
    for (let i = 0; i < inProc.length; i++) {
      d = Math.max(d, Math.abs((b.data[i] as number) - inProc[i]));
      dBase = Math.max(dBase, Math.abs((b.data[i] as number) - base[i]));
    }
    expect(d).toBe(0); // same kernels, same shapes: bitwise equal
    expect(dBase).toBeGreaterThan(1e-3);
    disposeLora(lora);
    model.dispose();
  });
});

describe('scripts/generate.ts', () => {
  it('writes one JSONL row per completion (--prompts with prompt and messages rows, --out) and to stdout', async () => {
    const promptsFile = path.join(tmp, 'prompts.jsonl');
    writeFileSync(
      promptsFile,
      [JSON.stringify({ prompt: 'hello owl' }), '', JSON.stringify({ messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'the 12' }] })].join('\n') + '\n',
    );
    const outFile = path.join(tmp, 'gen.jsonl');
    const [r1, r2] = await Promise.all([
      run('generate', ['--model', modelDir, '--prompts', promptsFile, '--n', '2', '--greedy', '--max-new-tokens', '4', '--batch-size', '3', '--out', outFile]),
      run('generate', ['--model', modelDir, '--adapter', adapterDir, '--system', 'sys', '--prompt', 'an owl', '--temperature', '0.7', '--top-p', '0.9', '--seed', '3', '--max-new-tokens', '3']),
    ]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout).toBe('');
    expect(ownLines(r1.stderr).every((l) => l.startsWith('generate: '))).toBe(true); // plain progress lines (no TTY)
    const rows = readFileSync(outFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(rows).toHaveLength(4);
    const tok = (await ChatTokenizer.load(modelDir))!;
    const expectedPromptTokens = [
      tok.promptIds([{ role: 'user', content: 'hello owl' }]).length,
      tok.promptIds([{ role: 'system', content: 'be brief' }, { role: 'user', content: 'the 12' }]).length,
    ];
    rows.forEach((row, i) => {
      expect(Object.keys(row).filter((k) => k !== 'messages').sort()).toEqual(['completion', 'completion_tokens', 'finish_reason', 'index', 'prompt', 'prompt_tokens', 'sample']);
      expect(row.index).toBe(Math.floor(i / 2));
      expect(row.sample).toBe(i % 2);
      expect(row.prompt).toBe(['hello owl', 'the 12'][row.index]);
      expect(row.prompt_tokens).toBe(expectedPromptTokens[row.index]);
      expect(['stop', 'length']).toContain(row.finish_reason);
      expect(row.completion_tokens).toBeLessThanOrEqual(4);
      expect(typeof row.completion).toBe('string');
    });
    expect(rows[1].messages).toBeUndefined();
    expect(rows[2].messages).toHaveLength(2);
    expect(rows[1].completion).toBe(rows[0].completion); // greedy samples agree
    expect(r2.code, r2.stderr).toBe(0);
    const out = r2.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ prompt: 'an owl', index: 0, sample: 0 });
    expect(out[0].prompt_tokens).toBe(tok.promptIds([{ role: 'system', content: 'sys' }, { role: 'user', content: 'an owl' }]).length);
  });

  it('--help on both scripts', async () => {
    const [g, l] = await Promise.all([run('generate', ['--help']), run('logits', ['--help'])]);
    expect(g.code).toBe(0);
    expect(g.stdout).toMatch(/^usage: npx tsx scripts\/generate\.ts/);
    expect(l.code).toBe(0);
    expect(l.stdout).toMatch(/^usage: npx tsx scripts\/logits\.ts/);
  });

  it('bad inputs give one error line and a non-zero exit', async () => {
    const badJsonl = path.join(tmp, 'bad.jsonl');
    writeFileSync(badJsonl, '{"prompt": "ok"}\n{"prompt": oops}\n');
    const noPrompt = path.join(tmp, 'noprompt.jsonl');
    writeFileSync(noPrompt, '{"text": "x"}\n');
    // A model folder with a corrupt safetensors file.
    const corrupt = path.join(tmp, 'corrupt');
    mkdirSync(corrupt);
    copyFileSync(path.join(modelDir, 'config.json'), path.join(corrupt, 'config.json'));
    writeFileSync(path.join(corrupt, 'model.safetensors'), Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
    // An adapter for a different base model.
    const otherCfg = parseConfig(tinyConfigJson('qwen2', { hidden_size: 48, num_attention_heads: 4, num_key_value_heads: 2 }));
    const otherAdapter = path.join(tmp, 'other-adapter');
    await writePeftAdapter(otherAdapter, otherCfg, randomLora(otherCfg));
    const cases: [Promise<Run>, RegExp][] = [
      [run('generate', ['--model', path.join(tmp, 'missing'), '--prompt', 'x']), /missing: model folder not found/],
      [run('generate', ['--model', modelDir, '--prompts', badJsonl]), /bad\.jsonl:2: not valid JSON/],
      [run('generate', ['--model', modelDir, '--prompts', noPrompt]), /noprompt\.jsonl:1: expected a string "prompt"/],
      [run('generate', ['--model', modelDir, '--prompt', 'x', '--top-p', '1.5']), /--top-p must be a number in \(0, 1\], got '1\.5'/],
      [run('generate', ['--model', modelDir, '--prompt', 'x', '--max-new-tokens', 'ten']), /--max-new-tokens must be an integer ≥ 0, got 'ten'/],
      [run('generate', ['--model', modelDir, '--prompt', 'x', '--n', '-2']), /--n must be an integer ≥ 1, got '-2'/],
      [run('generate', ['--model', modelDir, '--prompt', 'x', '--seed', '0x10']), /--seed must be an integer in \[0, 9007199254740991\], got '0x10'/],
      [run('generate', ['--model', modelDir, '--prompt', 'x', '--out', tmp]), /--out .* is a folder; give a file name/],
      [run('generate', ['--model', modelDir, '--prompt', 'x', '--out', path.join(tmp, 'no-such-dir', 'g.jsonl')]), /cannot write --out .*g\.jsonl: the folder .*no-such-dir does not exist/],
      [run('generate', ['--model', modelDir, '--prompt', 'x', '--out', badJsonl]), /--out .*bad\.jsonl exists; pass --overwrite to replace it/],
      [run('logits', ['--model', modelDir, '--ids', '1', '--out', path.join(modelDir, 'config.json', 'x.npy')]), /cannot write --out .*: .*config\.json is a file, not a folder/],
      [run('logits', ['--model', modelDir, '--ids', '1', '--out', path.join(modelDir, 'config.json')]), /config\.json exists; pass --overwrite to replace it/],
      [run('generate', ['--model', modelDir]), /exactly one of --prompt or --prompts/],
      [run('logits', ['--model', modelDir, '--ids', '1,x', '--out', path.join(tmp, 'x.npy')]), /--ids: "x" is not a non-negative integer/],
    ];
    for (const [p, re] of cases) expectOneLineError(await p, re);
    // A NaN in one weight: generate must not write "\u0000" × N and exit 0, nor logits a NaN array.
    const nanModel = path.join(tmp, 'nan-model');
    mkdirSync(nanModel);
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(path.join(modelDir, f), path.join(nanModel, f));
    const st = readFileSync(path.join(modelDir, 'model.safetensors'));
    const n = Number(st.readBigUInt64LE(0));
    const entry = JSON.parse(st.subarray(8, 8 + n).toString('utf8'))['model.norm.weight'];
    expect(entry.dtype).toBe('F32');
    st.writeFloatLE(NaN, 8 + n + entry.data_offsets[0] + 4);
    writeFileSync(path.join(nanModel, 'model.safetensors'), st);
    const nanOut = path.join(tmp, 'nan.jsonl');
    // These start the GPU: run them after the cheap ones.
    const gpuCases: [Promise<Run>, RegExp][] = [
      [run('logits', ['--model', corrupt, '--ids', '1', '--out', path.join(tmp, 'y.npy')]), /model\.safetensors/],
      [run('generate', ['--model', modelDir, '--adapter', otherAdapter, '--prompt', 'x']), /adapter_model\.safetensors: layer 0 v_proj: .*another base model/],
      [run('logits', ['--model', modelDir, '--ids', `1,${vocab}`, '--out', path.join(tmp, 'z.npy')]), /token id \d+ outside the vocabulary/],
      [run('generate', ['--model', nanModel, '--prompt', 'x', '--max-new-tokens', '5', '--out', nanOut]), /nan-model: non-finite logits \(NaN or ±Inf\) at generation step 0 of prompt 0; the weights hold NaN\/Inf/],
      [run('logits', ['--model', nanModel, '--ids', '1,2', '--out', path.join(tmp, 'nan.npy')]), /nan-model: the model computes non-finite logits \(NaN at position 0\).*nothing written/],
    ];
    for (const [p, re] of gpuCases) expectOneLineError(await p, re);
    expect(existsSync(nanOut)).toBe(false);
    expect(existsSync(path.join(tmp, 'nan.npy'))).toBe(false);
  });
});
