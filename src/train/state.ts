// Training state (trainable parameters + optimizer buffers + step) as one safetensors blob, so a
// killed run resumes exactly where its last checkpoint was written.
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { OptimizerStateData } from '../kernels/optimizer.ts';
import { buildHeader, parseSafetensorsHeader } from '../model/safetensors.ts';
import { UserError } from '../util/errors.ts';
import { killPoint } from '../util/faults.ts';
import { readControlJson, writeFileAtomic, writeJsonAtomic } from '../util/fsatomic.ts';

export function encodeState(params: Float32Array[], opt: OptimizerStateData): Uint8Array {
  const tensors: { name: string; dtype: string; shape: number[]; data: Float32Array }[] = [];
  params.forEach((p, i) => tensors.push({ name: `param.${i}`, dtype: 'F32', shape: [p.length], data: p }));
  for (const [k, list] of Object.entries(opt.buffers)) list.forEach((b, i) => tensors.push({ name: `opt.${k}.${i}`, dtype: 'F32', shape: [b.length], data: b }));
  const { header, order } = buildHeader(tensors, { optimizer_step: String(opt.step), buffers: Object.keys(opt.buffers).join(',') });
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const dataBytes = order.reduce((a, o) => Math.max(a, o.end), 0);
  const out = new Uint8Array(8 + header.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  for (const o of order) {
    const t = byName.get(o.name)!;
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), 8 + header.length + o.begin);
  }
  return out;
}

export function decodeState(bytes: Uint8Array, paramSizes: number[]): { params: Float32Array[]; opt: OptimizerStateData } {
  if (bytes.length < 8) throw new UserError('training state: file too short');
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const parsed = parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length, 'training state');
  const get = (name: string): Float32Array => {
    const t = parsed.tensors.get(name);
    if (!t) throw new UserError(`training state: missing ${name}`);
    const raw = bytes.slice(parsed.dataStart + t.begin, parsed.dataStart + t.end);
    return new Float32Array(raw.buffer);
  };
  const params = paramSizes.map((sz, i) => {
    const p = get(`param.${i}`);
    if (p.length !== sz) throw new UserError(`training state: param.${i} has ${p.length} values, the model needs ${sz} (a different model or adapter config?)`);
    return p;
  });
  const meta = parsed.metadata ?? {};
  const bufferNames = (meta.buffers ?? '').split(',').filter(Boolean);
  const buffers: Record<string, Float32Array[]> = {};
  for (const b of bufferNames) buffers[b] = paramSizes.map((_, i) => get(`opt.${b}.${i}`));
  return { params, opt: { step: Number(meta.optimizer_step ?? 0), buffers } };
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: one folder per save, one atomic unit. The files are written into a hidden temp folder,
// then manifest.json (each file's size and sha256, the optimizer step) last, then the folder is renamed
// into place. Resume takes the newest folder whose manifest verifies; a folder killed mid-write was
// never renamed and is ignored (and reported), so state.bin and state.json can never come from two
// different saves.
// ---------------------------------------------------------------------------------------------

export const CHECKPOINT_MANIFEST = 'manifest.json';
const CKPT_RE = /^ckpt-(\d{6,})$/;
const CKPT_TMP_RE = /^\.ckpt-\d+\.tmp-/;

export interface CheckpointManifest {
  version: 2;
  /** Optimizer steps taken (the trainer's step counter). */
  step: number;
  /** The optimizer's own step count (Adam bias correction). */
  optimizerStep: number;
  written: string;
  files: Record<string, { size: number; sha256: string }>;
}

export interface FoundCheckpoint {
  dir: string;
  manifest: CheckpointManifest;
  /** What was skipped on the way, one sentence each (an incomplete or damaged newer checkpoint). */
  notes: string[];
}

function listCheckpoints(root: string): { name: string; seq: number }[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  return names
    .map((name) => ({ name, m: CKPT_RE.exec(name) }))
    .filter((x) => x.m)
    .map((x) => ({ name: x.name, seq: Number(x.m![1]) }))
    .sort((a, b) => b.seq - a.seq);
}

/** Whether `root` holds any checkpoint folder (verified or not) or a legacy state pair. */
export function hasCheckpoint(root: string): boolean {
  return listCheckpoints(root).length > 0 || existsSync(path.join(root, 'state.json'));
}

/**
 * Writes a checkpoint of `files` (name → bytes) into `root`/ckpt-N; `extra(dir)` may add files (weights
 * for the user) before the manifest is written. Older checkpoints and killed writes are removed after the
 * new one is in place. Returns the new folder.
 */
export async function writeCheckpoint(
  root: string,
  files: Record<string, string | Uint8Array>,
  meta: { step: number; optimizerStep: number },
  extra?: (dir: string) => Promise<void>,
): Promise<string> {
  mkdirSync(root, { recursive: true });
  const seq = (listCheckpoints(root)[0]?.seq ?? 0) + 1;
  const name = `ckpt-${String(seq).padStart(6, '0')}`;
  const tmp = path.join(root, `.${name}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(tmp);
  for (const [f, data] of Object.entries(files)) await writeFileAtomic(path.join(tmp, f), data);
  if (extra) await extra(tmp);
  killPoint('checkpoint-files');
  const manifest: CheckpointManifest = { version: 2, step: meta.step, optimizerStep: meta.optimizerStep, written: new Date().toISOString(), files: {} };
  for (const f of listFiles(tmp)) {
    const bytes = readFileSync(path.join(tmp, f));
    manifest.files[f] = { size: bytes.byteLength, sha256: createHash('sha256').update(bytes).digest('hex') };
  }
  await writeJsonAtomic(path.join(tmp, CHECKPOINT_MANIFEST), manifest);
  killPoint('checkpoint-manifest');
  const dest = path.join(root, name);
  renameSync(tmp, dest);
  fsyncDirSync(root);
  for (const n of readdirSync(root)) {
    if ((CKPT_RE.test(n) && n !== name) || CKPT_TMP_RE.test(n)) rmSync(path.join(root, n), { recursive: true, force: true });
  }
  killPoint('checkpoint-saved');
  return dest;
}

/** Files under dir (relative, '/'-separated), the manifest excluded. */
function listFiles(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(dir, prefix), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...listFiles(dir, rel));
    else if (rel !== CHECKPOINT_MANIFEST) out.push(rel);
  }
  return out;
}

function fsyncDirSync(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    /* durability only */
  }
}

/** Why a checkpoint folder fails verification, or null when every file matches its manifest. */
function verifyCheckpoint(dir: string): { manifest: CheckpointManifest | null; problem: string | null } {
  const mf = path.join(dir, CHECKPOINT_MANIFEST);
  let manifest: CheckpointManifest;
  try {
    manifest = readControlJson(mf, 'checkpoint manifest') as CheckpointManifest;
  } catch (e) {
    return { manifest: null, problem: (e as Error).message };
  }
  if (!manifest) return { manifest: null, problem: `${mf}: missing (the checkpoint was not completed)` };
  if (manifest.version !== 2 || typeof manifest.step !== 'number' || typeof manifest.files !== 'object' || manifest.files === null) {
    return { manifest: null, problem: `${mf}: corrupt checkpoint manifest` };
  }
  for (const need of ['state.bin', 'state.json']) if (!manifest.files[need]) return { manifest: null, problem: `${mf}: does not list ${need}` };
  for (const [f, want] of Object.entries(manifest.files)) {
    const file = path.join(dir, f);
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch {
      return { manifest: null, problem: `${file}: missing` };
    }
    if (bytes.byteLength !== want.size) return { manifest: null, problem: `${file}: ${bytes.byteLength} bytes, the manifest says ${want.size}` };
    if (createHash('sha256').update(bytes).digest('hex') !== want.sha256) return { manifest: null, problem: `${file}: content differs from its manifest (damaged or replaced)` };
  }
  return { manifest, problem: null };
}

/**
 * The newest checkpoint in `root` whose files match its manifest. A newer one that fails is skipped with
 * a note (the run falls back to the previous complete one); none left is a UserError naming the problem.
 */
export function findCheckpoint(root: string): FoundCheckpoint {
  const notes: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(root);
  } catch {
    /* reported below */
  }
  for (const t of names.filter((n) => CKPT_TMP_RE.test(n))) notes.push(`ignored ${path.join(root, t)} (a checkpoint whose writing was interrupted)`);
  const problems: string[] = [];
  for (const c of listCheckpoints(root)) {
    const dir = path.join(root, c.name);
    const v = verifyCheckpoint(dir);
    if (v.manifest) return { dir, manifest: v.manifest, notes };
    problems.push(v.problem!);
    notes.push(`skipped ${dir}: ${v.problem}`);
  }
  if (problems.length) throw new UserError(`no usable checkpoint in ${root}: ${problems[0]}`);
  if (existsSync(path.join(root, 'state.json'))) {
    throw new UserError(`${root}: the training state was written by an older version (no checkpoint manifest) and cannot be verified; start the run over`);
  }
  throw new UserError(`${root}: no training state to resume from`);
}

/** Fields of two configs that differ, as "name a → b" (stable JSON per field). */
export function configDiff(saved: Record<string, unknown>, current: Record<string, unknown>): string[] {
  const show = (v: unknown) => (v === undefined ? 'unset' : typeof v === 'string' ? v : JSON.stringify(v));
  const keys = [...new Set([...Object.keys(saved), ...Object.keys(current)])].sort();
  return keys.filter((k) => stableStringify(saved[k]) !== stableStringify(current[k])).map((k) => `${k} ${show(saved[k])} → ${show(current[k])}`);
}

function stableStringify(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'undefined';
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stableStringify(o[k])}`)
    .join(',')}}`;
}
