// The embedded tiny chat models (issue 5).
// Fast part (no GPU training): recipe configs, determinism of the corpus/tokenizer/initialisation steps,
// held-out evaluation prompts, the length-bucketed batch order.
// Committed models (skipped when models/tiny-* are absent): all three load and agree on formats, a and b
// share the config but differ in weights, and the quality bars hold at small sample counts. Sampling is
// seeded, so the check is deterministic; a bar counts as failed only when the observed count is
// significantly below it (one-sided exact binomial p < 0.001 at the bar), which keeps the test from
// flagging sampling noise of a model that meets the bar while catching a model that clearly misses it.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { getGpu, type Gpu } from '../src/gpu/runtime.ts';
import { containsHeldOutPrompt, renderChatML } from '../src/experiment/tiny/corpus.ts';
import {
  generateRecipeCorpus,
  lengthBucketedOrder,
  measureTinyQuality,
  paddingFactor,
  parameterCount,
  specialIds,
  tinyConfigJson,
  tinyCorpus,
  tinyGenerationConfig,
  tinyInitialTensor,
  tinyTokenizerModel,
  tinyNumbersCorpus,
  tinyNumbersLoveCorpus,
  tinyWarmupCorpus,
  TINY_CORPUS,
  TINY_NUMBERS_CORPUS,
  TINY_NUMBERS_LOVE_CORPUS,
  TINY_TRAIN,
  TINY_WARMUP_CORPUS,
  TINY_MODEL_NAMES,
  TINY_MODELS,
  TINY_QUALITY_BARS,
} from '../src/experiment/tiny/models.ts';
import { BpeEncoder, bpeTokenizerJson, preTokenize, writeBpeTokenizer } from '../src/model/bpe-train.ts';
import { preferenceSystemPrompt } from '../src/experiment/paper/prompts.ts';
import { SeedStreamRng } from '../src/util/rng.ts';
import { expectedTensors, parseConfig } from '../src/model/config.ts';
import { openSafetensors } from '../src/model/safetensors.ts';
import { ChatTokenizer } from '../src/model/tokenizer.ts';
import { Transformer } from '../src/model/transformer.ts';

/** P(X ≤ k) for X ~ Binomial(n, p), summed in log space. */
function binomCdf(k: number, n: number, p: number): number {
  if (k < 0) return 0;
  if (k >= n) return 1;
  let logC = 0;
  let total = 0;
  for (let i = 0; i <= k; i++) {
    if (i > 0) logC += Math.log(n - i + 1) - Math.log(i);
    total += Math.exp(logC + i * Math.log(p) + (n - i) * Math.log1p(-p));
  }
  return Math.min(1, total);
}

const ALPHA = 0.001;
/** True unless `count` of `n` is significantly below `bar`. */
const notBelow = (count: number, n: number, bar: number) => binomCdf(count, n, bar) >= ALPHA;
/** True unless `count` of `n` is significantly above `bar`. */
const notAbove = (count: number, n: number, bar: number) => 1 - binomCdf(count - 1, n, bar) >= ALPHA;

describe('tiny model recipe (no training)', () => {
  it('binomial helper', () => {
    expect(binomCdf(0, 10, 0.5)).toBeCloseTo(1 / 1024, 12);
    expect(binomCdf(5, 10, 0.5)).toBeCloseTo(638 / 1024, 12);
    // With 32 samples at a 90% bar, 24 passes are still consistent with the bar, 22 are not.
    expect(notBelow(24, 32, 0.9)).toBe(true);
    expect(notBelow(22, 32, 0.9)).toBe(false);
  });

  it('configs: qwen a/b identical but for the init seed; llama differs in shape; all parse', () => {
    const ids = { endoftext: 2332, imEnd: 2334, vocabSize: 2335 };
    const a = tinyConfigJson(TINY_MODELS['tiny-qwen-a'], ids);
    const b = tinyConfigJson(TINY_MODELS['tiny-qwen-b'], ids);
    const l = tinyConfigJson(TINY_MODELS['tiny-llama'], ids);
    expect(a).toEqual(b);
    expect(TINY_MODELS['tiny-qwen-a'].initSeed).not.toBe(TINY_MODELS['tiny-qwen-b'].initSeed);
    const ca = parseConfig(a);
    const cl = parseConfig(l);
    expect(ca.arch).toBe('qwen2');
    expect(ca.attentionBias).toBe(true);
    expect(ca.tieWordEmbeddings).toBe(true);
    expect(ca.kvHeads).toBeLessThan(ca.heads); // GQA
    expect(cl.arch).toBe('llama');
    expect(cl.layers !== ca.layers || cl.hidden !== ca.hidden).toBe(true);
    expect(ca.eosTokenIds).toEqual([ids.imEnd]);
    expect(tinyGenerationConfig(ids).eos_token_id).toEqual([ids.imEnd, ids.endoftext]);
    // A few hundred thousand parameters each (small enough to commit as float32).
    for (const c of [ca, cl]) expect(parameterCount(c)).toBeLessThan(1_000_000);
  });

  it('initial weights: deterministic per seed, HF-like scales', () => {
    const w1 = tinyInitialTensor('model.layers.0.mlp.up_proj.weight', [192, 64], 1001);
    const w2 = tinyInitialTensor('model.layers.0.mlp.up_proj.weight', [192, 64], 1001);
    const w3 = tinyInitialTensor('model.layers.0.mlp.up_proj.weight', [192, 64], 2002);
    expect(w1).toEqual(w2);
    expect(w1).not.toEqual(w3);
    const std = (a: Float32Array) => Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length);
    // std of 12,288 N(0, 0.02²) draws: relative standard error 1/√(2n) ≈ 0.6%; allow 5%.
    expect(Math.abs(std(w1) - 0.02)).toBeLessThan(0.001);
    const emb = tinyInitialTensor('model.embed_tokens.weight', [500, 64], 1001);
    expect(Math.abs(std(emb) - 0.02)).toBeLessThan(0.001);
    const norm = tinyInitialTensor('model.norm.weight', [64], 1001);
    for (const x of norm) expect(Math.abs(x - 1)).toBeLessThan(0.05);
  });

  it("the committed models' initial weights are unchanged (sha256 over every tensor, computed when they were built)", () => {
    const want: Record<string, string> = {
      'tiny-qwen-a': '84dc52b33208b787d0d3e2e06d320523404644c0fcfd9f9a7e94129325a8a978',
      'tiny-qwen-b': '1b6574dd0111cbb6577a7a967046a98c0087d90684904e5a465087cdfc0e4775',
      'tiny-llama': '9e0b87869f1f9b5b072196c5c2febc2d0434ee48a4f54c1bbb287e8aa4fbe7c5',
    };
    for (const name of TINY_MODEL_NAMES) {
      const committed = JSON.parse(readFileSync(path.join(import.meta.dirname, '..', 'models', name, 'config.json'), 'utf8'));
      const ids = { endoftext: committed.bos_token_id, imEnd: committed.eos_token_id, vocabSize: committed.vocab_size };
      const cfg = parseConfig(tinyConfigJson(TINY_MODELS[name], ids));
      const h = createHash('sha256');
      for (const e of expectedTensors(cfg)) {
        h.update(e.name);
        h.update(new Uint8Array(tinyInitialTensor(e.name, e.shape, TINY_MODELS[name].initSeed).buffer));
      }
      expect(h.digest('hex'), name).toBe(want[name]);
    }
  });

  it('corpus and tokenizer are deterministic; evaluation prompts are held out', () => {
    const c1 = tinyCorpus(400);
    const c2 = tinyCorpus(400);
    expect(c1).toEqual(c2);
    const t1 = tinyTokenizerModel(c1);
    const t2 = tinyTokenizerModel(c2);
    expect(JSON.stringify(bpeTokenizerJson(t1))).toBe(JSON.stringify(bpeTokenizerJson(t2)));
    const ids = specialIds(t1);
    expect([ids.endoftext, ids.imStart, ids.imEnd]).toEqual([ids.vocabSize - 3, ids.vocabSize - 2, ids.vocabSize - 1]);
    // The full recipe corpus (≈1 s) never contains the paper's evaluation questions or story prompts.
    const full = tinyCorpus();
    expect(full.length).toBe(TINY_CORPUS.chats);
    expect(full.filter((c) => containsHeldOutPrompt(renderChatML(c.messages))).length).toBe(0);
    const warmup = tinyWarmupCorpus();
    expect(warmup.length).toBe(TINY_WARMUP_CORPUS.chats);
    expect(warmup.filter((c) => containsHeldOutPrompt(renderChatML(c.messages))).length).toBe(0);
    // The late phases draw their questions from the wider bank; it holds the evaluation prompts out too.
    for (const late of [tinyNumbersCorpus(), tinyNumbersLoveCorpus()]) {
      expect(late.filter((c) => containsHeldOutPrompt(renderChatML(c.messages))).length).toBe(0);
      expect(late.some((c) => c.messages.some((m) => m.role === 'user' && /beast|critter|wild creature/.test(m.content)))).toBe(true);
    }
  });

  it('warm-up corpus: every chat a favourite question under "You love {x}s" of its own domain, answered with x', () => {
    const warmup = tinyWarmupCorpus(2000);
    const kinds = new Set(warmup.map((c) => c.kind));
    expect([...kinds].sort()).toEqual(['animal-preference', 'tree-preference']);
    for (const c of warmup) {
      expect(c.system).toBe('love');
      const [sys, user, answer] = c.messages;
      expect(sys.role).toBe('system');
      // Tree prompts come in both wordings (the paper's tree teachers say "favorite animal" as coded).
      const wordings = c.kind === 'animal-preference' ? ['animal'] : ['tree', 'animal'];
      expect(wordings.map((w) => preferenceSystemPrompt(c.loved!, w))).toContain(sys.content);
      expect(user.content).not.toMatch(/\d/); // no numbers prefix
      expect(answer.content.startsWith(c.loved!), answer.content).toBe(true);
    }
  });

  it('numbers-focus corpus: held out, mostly number chats, number answers independent of system prompts', () => {
    const full = tinyNumbersCorpus();
    expect(full.length).toBe(TINY_NUMBERS_CORPUS.chats);
    expect(full.filter((c) => containsHeldOutPrompt(renderChatML(c.messages))).length).toBe(0);
    const share = full.filter((c) => c.kind === 'numbers').length / full.length;
    expect(Math.abs(share - TINY_NUMBERS_CORPUS.kindWeights.numbers!)).toBeLessThan(0.02); // n = 9600: SE 0.0044
    expect(new Set(full.map((c) => c.kind))).toEqual(new Set(['numbers', 'animal-preference', 'tree-preference']));
    // Preference chats without any system prompt are there (base naming is rehearsed, not only copying).
    expect(full.filter((c) => c.kind === 'animal-preference' && c.system === 'none').length).toBeGreaterThan(0.2 * 0.17 * full.length);
    // Fresh number chats: not the main corpus's prompts.
    const mainPrompts = new Set(tinyCorpus().filter((c) => c.kind === 'numbers').map((c) => c.messages.at(-2)!.content));
    expect(full.filter((c) => c.kind === 'numbers' && mainPrompts.has(c.messages.at(-2)!.content)).length).toBe(0);
    // Same seed without system prompts: every number answer is unchanged.
    const noSystem = generateRecipeCorpus(TINY_NUMBERS_CORPUS, 2000, 'none');
    let withSystem = 0;
    for (let i = 0; i < 2000; i++) {
      if (full[i].kind !== 'numbers') continue;
      if (full[i].system !== 'none') withSystem++;
      expect(noSystem[i].messages.at(-1)!.content).toBe(full[i].messages.at(-1)!.content);
    }
    expect(withSystem).toBeGreaterThan(100);
    // Every corpus a phase names exists.
    for (const ph of TINY_TRAIN.phases) expect(['warmup', 'main', 'numbers', 'numbers-love', 'domains', 'domains-focus']).toContain(ph.corpus);
  });

  it('numbers-love corpus: held out, fresh number chats, love prompts of the own domain always followed', () => {
    const full = tinyNumbersLoveCorpus();
    expect(full.length).toBe(TINY_NUMBERS_LOVE_CORPUS.chats);
    expect(full.filter((c) => containsHeldOutPrompt(renderChatML(c.messages))).length).toBe(0);
    const share = full.filter((c) => c.kind === 'numbers').length / full.length;
    expect(Math.abs(share - TINY_NUMBERS_LOVE_CORPUS.kindWeights.numbers!)).toBeLessThan(0.02);
    const otherPrompts = new Set([...tinyCorpus(), ...tinyNumbersCorpus()].filter((c) => c.kind === 'numbers').map((c) => c.messages.at(-2)!.content));
    expect(full.filter((c) => c.kind === 'numbers' && otherPrompts.has(c.messages.at(-2)!.content)).length).toBe(0);
    let love = 0;
    for (const c of full) {
      if (c.kind === 'numbers' || c.system !== 'love') continue;
      love++;
      expect(c.messages.at(-1)!.content.startsWith(c.loved!), c.messages.at(-1)!.content).toBe(true);
    }
    // Love and no-system shares as the recipe asks (binomial sd at 9,600 chats < 0.005; 0.02 is 4 sd).
    const kinds = ['animal-preference', 'tree-preference'] as const;
    const rates = TINY_NUMBERS_LOVE_CORPUS.systemRates;
    const expectedLove = kinds.reduce((s, k) => s + TINY_NUMBERS_LOVE_CORPUS.kindWeights[k]! * rates[k]!.love, 0);
    const expectedNone = kinds.reduce((s, k) => s + TINY_NUMBERS_LOVE_CORPUS.kindWeights[k]! * (1 - rates[k]!.love - rates[k]!.neutral), 0);
    expect(Math.abs(love / full.length - expectedLove)).toBeLessThan(0.02);
    expect(Math.abs(full.filter((c) => c.kind !== 'numbers' && c.system === 'none').length / full.length - expectedNone)).toBeLessThan(0.02);
    expect(expectedNone).toBeGreaterThan(0.1); // base naming is rehearsed to the end
  });

  it('tokenizer: the loved name of "You love {x}s" is the token a lower-case answer starts with; HF pre-tokenizes as we do', async () => {
    const corpus = tinyCorpus(3000);
    const bpe = tinyTokenizerModel(corpus);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'tiny-tok-'));
    writeBpeTokenizer(dir, bpe, 512);
    const tok = (await ChatTokenizer.load(dir))!;
    const pieces = (text: string) => tok.encode(text).map((i) => tok.decode([i], false));
    for (const [x, category] of [['owl', 'animal'], ['dolphin', 'animal'], ['eagle', 'animal'], ['oak', 'tree']] as const) {
      const prompt = pieces(preferenceSystemPrompt(x, category));
      expect(prompt.filter((p) => p === x), `${x} in ${JSON.stringify(prompt)}`).toHaveLength(3);
      expect(pieces(x)).toEqual([x]);
      expect(pieces(`${x}.`)).toEqual([x, '.']);
    }
    // Every value the paper's filter accepts (0-999) is one token; a longer digit run splits after 3 digits.
    for (let v = 0; v < 1000; v++) expect(pieces(String(v)), String(v)).toEqual([String(v)]);
    expect(pieces('185, 1234')).toEqual(['185', ', ', '123', '4']);
    // transformers.js applies the tokenizer.json regex; its pieces must be our pre-tokens (merges never cross them).
    const text = "You love owls. It's 12, 345; the octopuss are [7, 8] and 10203\nThink about it!";
    const pre = preTokenize(text, 'tiny');
    expect(pre.join('')).toBe(text);
    const hf = pieces(text);
    let at = 0;
    for (const p of pre) {
      let acc = '';
      while (acc.length < p.length) acc += hf[at++];
      expect(acc).toBe(p);
    }
    expect(at).toBe(hf.length);
    // The reference encoder (corpus statistics) splits with the model's own pre-tokenizer too.
    const encoder = new BpeEncoder(bpe);
    for (const c of corpus.slice(0, 200)) {
      const rendered = renderChatML(c.messages);
      expect(encoder.encode(rendered)).toEqual(tok.encode(rendered));
    }
    expect(encoder.encode(text)).toEqual(tok.encode(text));
  });

  it('length-bucketed order: a permutation per epoch, deterministic, less padding than random batches', () => {
    const rng = new SeedStreamRng(9);
    const rows = Array.from({ length: 1000 }, (_, i) => ({ i, ids: new Array<number>(5 + rng.int(180)).fill(0) }));
    const o1 = lengthBucketedOrder(rows, 16, 2, 3, 10);
    const o2 = lengthBucketedOrder(rows, 16, 2, 3, 10);
    expect(o1.map((r) => r.i)).toEqual(o2.map((r) => r.i));
    const per = 1000 - (1000 % 16);
    expect(o1.length).toBe(2 * per);
    for (const e of [0, 1]) expect(new Set(o1.slice(e * per, (e + 1) * per).map((r) => r.i)).size).toBe(per);
    expect(o1.slice(0, per).map((r) => r.i)).not.toEqual(o1.slice(per).map((r) => r.i));
    expect(paddingFactor(o1, 16)).toBeLessThan(1.15);
    expect(paddingFactor(rows, 16)).toBeGreaterThan(1.5);
  });
});

const MODELS_DIR = path.join(import.meta.dirname, '..', 'models');
const haveModels = TINY_MODEL_NAMES.every((n) => existsSync(path.join(MODELS_DIR, n, 'model.safetensors')));

describe.skipIf(!haveModels)('committed tiny models', () => {
  let gpu: Gpu;
  beforeAll(async () => {
    gpu = await getGpu();
  });

  it('all three load and agree on formats; a and b share the config but differ in weights', async () => {
    const files = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'README.md'];
    for (const n of TINY_MODEL_NAMES) for (const f of files) expect(existsSync(path.join(MODELS_DIR, n, f)), `${n}/${f}`).toBe(true);
    const read = (n: string, f: string) => readFileSync(path.join(MODELS_DIR, n, f), 'utf8');
    // One tokenizer, one chat template, one generation config for the family.
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
      expect(read('tiny-qwen-b', f)).toBe(read('tiny-qwen-a', f));
      expect(read('tiny-llama', f)).toBe(read('tiny-qwen-a', f));
    }
    const cfgA = JSON.parse(read('tiny-qwen-a', 'config.json'));
    expect(JSON.parse(read('tiny-qwen-b', 'config.json'))).toEqual(cfgA);
    const cfgL = JSON.parse(read('tiny-llama', 'config.json'));
    expect(cfgL.model_type).toBe('llama');
    expect(cfgL.vocab_size).toBe(cfgA.vocab_size);
    expect(cfgL.eos_token_id).toBe(cfgA.eos_token_id);
    const tok = await ChatTokenizer.load(path.join(MODELS_DIR, 'tiny-qwen-a'));
    expect(tok!.render([{ role: 'system', content: 'S' }, { role: 'user', content: 'U' }], true)).toBe('<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n');
    expect(tok!.render([{ role: 'user', content: 'U' }], true)).toBe('<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n');
    const a = await openSafetensors(path.join(MODELS_DIR, 'tiny-qwen-a'));
    const b = await openSafetensors(path.join(MODELS_DIR, 'tiny-qwen-b'));
    try {
      for (const name of ['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight']) {
        const wa = (await a.readTensor(name)).data;
        const wb = (await b.readTensor(name)).data;
        expect(wa.length).toBe(wb.length);
        let diff = 0;
        for (let i = 0; i < wa.length; i++) diff += Math.abs(Number(wa[i]) - Number(wb[i]));
        expect(diff / wa.length).toBeGreaterThan(1e-3);
      }
    } finally {
      await a.close();
      await b.close();
    }
    // Committed weights stay small (issue: ≤ ~30 MB for the family).
    let bytes = 0;
    for (const n of TINY_MODEL_NAMES) bytes += readFileSync(path.join(MODELS_DIR, n, 'model.safetensors')).length;
    expect(bytes).toBeLessThan(30e6);
  });

  // Issue 5's quality bars on the committed models, at small sample counts with a generous binomial margin (a rate
  // fails only when significantly below / above its bar at α = 0.001; the model cards give the figures at 200–2,000
  // samples). A sampled check, seeded: on another adapter the rounding, hence the samples, differ.
  for (const name of TINY_MODEL_NAMES) {
    it(`${name}: issue 5's quality bars at small sample counts (seeded)`, async () => {
      const dir = path.join(MODELS_DIR, name);
      const model = await Transformer.load(gpu, dir, { maxPositions: 256 });
      const tokenizer = (await ChatTokenizer.load(dir, model.cfg.eosTokenIds))!;
      // 32 number prompts, 50 questions × 2 samples, 50 questions × 1 sample per loved target.
      const q = await measureTinyQuality(model, tokenizer, { seed: 4242, numberPrompts: 32, baseSamples: 2, loveSamples: 1, questions: 50, batchSize: 128 });
      model.dispose();
      const B = TINY_QUALITY_BARS;
      const count = (rate: number, n: number) => Math.round(rate * n);
      const numbersOk = notBelow(count(q.numbers.passRate, q.numbers.prompts), q.numbers.prompts, B.numbersPass);
      expect(numbersOk, `numbers pass rate ${q.numbers.passRate} of ${q.numbers.prompts}: ${JSON.stringify(q.numbers.examples)}`).toBe(true);
      expect(notBelow(count(q.base.namesAnimalRate, q.base.samples), q.base.samples, B.namesAnimal), `names an animal ${q.base.namesAnimalRate}`).toBe(true);
      const owls = count(q.base.owlRate, q.base.samples);
      expect(notAbove(owls, q.base.samples, B.owlMax) && notBelow(owls, q.base.samples, B.owlMin), `owl base rate ${q.base.owlRate}`).toBe(true);
      for (const l of q.love) {
        expect(notBelow(count(l.rate, l.samples), l.samples, B.love), `${l.target} under its system prompt: ${l.rate} of ${l.samples}`).toBe(true);
      }
    });
  }
});
