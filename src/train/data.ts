// Training data: JSONL rows that are either chat rows {"messages": [...]} (rendered with the model's
// chat template; only assistant content + end-of-turn trained) or pre-tokenized
// {"input_ids": [...], "labels": [...]} (HF convention: labels aligned with input_ids, -100 =
// ignored; the model predicts labels[t+1] from position t). Rows may carry "teacher_topk" for offline
// distillation: {"indices": [[...k] per position], "logprobs": [[...k] per position]}, aligned with
// input_ids (entry t = the teacher's distribution for the token at t+1, i.e. at logits row t).
import { createHash } from 'node:crypto';
import type { ChatMessage, ChatTokenizer } from '../model/tokenizer.ts';
import { UserError } from '../util/errors.ts';
import { readJsonlFile } from '../util/jsonl.ts';

export interface TeacherTopK {
  indices: number[][];
  logprobs: number[][];
}

export interface TrainExample {
  ids: number[];
  /** HF-style labels aligned with ids (-100 = ignored). */
  labels: number[];
  teacherTopK?: TeacherTopK;
  /** The chat messages (kept for online distillation with a teacher system prompt). */
  messages?: ChatMessage[];
  /**
   * Per-position weight of the distillation loss, aligned with ids (entry t weighs logits row t);
   * absent = 1 everywhere. 0 drops a position from the KL (e.g. divergence positions).
   */
  distillMask?: number[];
  /**
   * The online teacher's final hidden states at this row's trained positions, in order ([n × hidden]),
   * computed once for a dataset so every student of the teacher skips the teacher's forward pass.
   */
  teacherRows?: Float32Array;
}

export interface LoadedData {
  examples: TrainExample[];
  truncated: number;
  skippedNoTarget: number;
}

const ROLES = new Set(['system', 'user', 'assistant']);

function parseMessages(v: unknown, where: string): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw new UserError(`${where}: "messages" must be a non-empty array`);
  return v.map((m, i) => {
    const mm = m as { role?: unknown; content?: unknown };
    if (typeof mm !== 'object' || mm === null || typeof mm.role !== 'string' || !ROLES.has(mm.role) || typeof mm.content !== 'string') {
      throw new UserError(`${where}: messages[${i}] must be {"role": "system"|"user"|"assistant", "content": string}`);
    }
    return { role: mm.role as ChatMessage['role'], content: mm.content };
  });
}

function intArray(v: unknown, what: string, where: string, vocab: number | null): number[] {
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) throw new UserError(`${where}: "${what}" must be an array of integers`);
  if (vocab !== null) {
    const bad = (v as number[]).find((x) => x !== -100 && (x < 0 || x >= vocab));
    if (bad !== undefined) throw new UserError(`${where}: "${what}" holds ${bad}, outside the vocabulary [0, ${vocab})`);
  }
  return v as number[];
}

/** Largest total probability mass a row of stored top-k log-probs may have (float rounding above 1). */
const MASS_TOLERANCE = 1e-3;

/**
 * Checks a row's "teacher_topk": {"indices": [[k ids] per position], "logprobs": [[k log-probs] per
 * position]}, one entry per position of the sequence; each position's ids are distinct vocabulary ids and
 * its log-probs finite, ≤ 0, of the same length, with total mass ≤ 1. `where` is "file:line".
 */
export function parseTeacherTopK(v: unknown, positions: number, vocab: number, where: string): TeacherTopK {
  const shape = `"teacher_topk" must be {"indices": [[...], ...], "logprobs": [[...], ...]} with one list per position`;
  const t = v as { indices?: unknown; logprobs?: unknown } | null;
  if (typeof t !== 'object' || t === null || Array.isArray(t) || !Array.isArray(t.indices) || !Array.isArray(t.logprobs)) throw new UserError(`${where}: ${shape}`);
  const { indices, logprobs } = t as { indices: unknown[]; logprobs: unknown[] };
  if (indices.length !== logprobs.length) throw new UserError(`${where}: "teacher_topk" has ${indices.length} index lists but ${logprobs.length} log-prob lists`);
  if (indices.length !== positions) throw new UserError(`${where}: "teacher_topk" has ${indices.length} positions, the sequence has ${positions}`);
  for (let p = 0; p < indices.length; p++) {
    const ind = indices[p];
    const lp = logprobs[p];
    if (!Array.isArray(ind) || !Array.isArray(lp)) throw new UserError(`${where}: "teacher_topk" position ${p} is not a list (${shape})`);
    if (ind.length !== lp.length) throw new UserError(`${where}: "teacher_topk" position ${p} has ${ind.length} indices but ${lp.length} log-probs`);
    const seen = new Set<number>();
    let mass = 0;
    for (let j = 0; j < ind.length; j++) {
      const id = ind[j];
      if (typeof id !== 'number' || !Number.isInteger(id)) throw new UserError(`${where}: "teacher_topk" position ${p}: index ${JSON.stringify(id)} is not an integer`);
      if (id < 0 || id >= vocab) throw new UserError(`${where}: "teacher_topk" position ${p}: index ${id} outside the vocabulary [0, ${vocab})`);
      if (seen.has(id)) throw new UserError(`${where}: "teacher_topk" position ${p}: index ${id} listed twice`);
      seen.add(id);
      const l = lp[j];
      if (typeof l !== 'number' || !Number.isFinite(l)) throw new UserError(`${where}: "teacher_topk" position ${p}: log-prob ${JSON.stringify(l)} is not a finite number`);
      if (l > 0) throw new UserError(`${where}: "teacher_topk" position ${p}: log-prob ${l} is positive (a log-probability is ≤ 0)`);
      mass += Math.exp(l);
    }
    if (mass > 1 + MASS_TOLERANCE) throw new UserError(`${where}: "teacher_topk" position ${p}: probabilities sum to ${mass.toFixed(4)} (> 1; are these logits, not log-probs?)`);
  }
  return { indices: indices as number[][], logprobs: logprobs as number[][] };
}

/**
 * Reads and tokenizes a JSONL training file. Sequences longer than maxLen are truncated (counted);
 * rows with nothing to train on after truncation are skipped (counted).
 */
export function loadTrainingData(file: string, tokenizer: ChatTokenizer | null, vocab: number, maxLen: number): LoadedData {
  const examples: TrainExample[] = [];
  let truncated = 0;
  let skippedNoTarget = 0;
  for (const { line, value } of readJsonlFile(file)) {
    const where = `${file}:${line}`;
    const row = value as Record<string, unknown>;
    if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new UserError(`${where}: each line must be a JSON object`);
    let ex: TrainExample;
    if ('messages' in row) {
      if (!tokenizer) throw new UserError(`${where}: chat rows need a tokenizer (tokenizer.json) in the model folder; use pre-tokenized {"input_ids", "labels"} rows instead`);
      const messages = parseMessages(row.messages, where);
      if (!messages.some((m) => m.role === 'assistant')) throw new UserError(`${where}: the conversation has no assistant turn to train on`);
      const { ids, labels } = tokenizer.chatTrainingIds(messages);
      // A tokenizer can know more tokens than the model's embedding has rows (config.json's vocab_size).
      const bad = ids.find((x) => x >= vocab);
      if (bad !== undefined) throw new UserError(`${where}: the chat tokenizes to id ${bad}, outside the model's vocabulary [0, ${vocab}) (config.json vocab_size is smaller than the tokenizer's)`);
      ex = { ids, labels, messages };
    } else if ('input_ids' in row) {
      const ids = intArray(row.input_ids, 'input_ids', where, vocab);
      const labels = 'labels' in row ? intArray(row.labels, 'labels', where, vocab) : ids.slice();
      if (labels.length !== ids.length) throw new UserError(`${where}: "labels" has ${labels.length} entries but "input_ids" has ${ids.length}`);
      if (ids.some((x) => x < 0)) throw new UserError(`${where}: "input_ids" must be non-negative`);
      ex = { ids, labels };
    } else {
      throw new UserError(`${where}: a row needs "messages" (chat) or "input_ids" (pre-tokenized)`);
    }
    if (row.teacher_topk !== undefined) ex.teacherTopK = parseTeacherTopK(row.teacher_topk, ex.ids.length, vocab, where);
    if (ex.ids.length > maxLen) {
      truncated++;
      ex.ids = ex.ids.slice(0, maxLen);
      ex.labels = ex.labels.slice(0, maxLen);
      if (ex.teacherTopK) ex.teacherTopK = { indices: ex.teacherTopK.indices.slice(0, maxLen), logprobs: ex.teacherTopK.logprobs.slice(0, maxLen) };
    }
    if (targetCount(ex) === 0) {
      skippedNoTarget++;
      continue;
    }
    examples.push(ex);
  }
  if (examples.length === 0) {
    throw new UserError(
      skippedNoTarget > 0
        ? `${file}: no trainable rows (${skippedNoTarget} row(s) have no trained token within the first ${maxLen} tokens; raise --max-len)`
        : `${file}: no trainable rows`,
    );
  }
  return { examples, truncated, skippedNoTarget };
}

/** Number of trained positions: labels[t+1] ≠ -100 for t < T−1. */
export function targetCount(ex: TrainExample): number {
  let n = 0;
  for (let t = 1; t < ex.labels.length; t++) if (ex.labels[t] !== -100) n++;
  return n;
}

/** sha256 of the examples as the trainer sees them (ids, labels, stored teacher top-k): what a resume must match. */
export function examplesDigest(examples: readonly TrainExample[]): string {
  const h = createHash('sha256');
  const ints = (a: readonly number[]) => h.update(new Uint8Array(Int32Array.from(a).buffer));
  h.update(`${examples.length}\n`);
  for (const ex of examples) {
    h.update(`r${ex.ids.length}`);
    ints(ex.ids);
    ints(ex.labels);
    if (ex.teacherTopK) {
      h.update('k');
      ex.teacherTopK.indices.forEach((row, t) => {
        h.update(`${row.length}`);
        ints(row);
        h.update(new Uint8Array(Float64Array.from(ex.teacherTopK!.logprobs[t] ?? []).buffer));
      });
    }
  }
  return h.digest('hex');
}
