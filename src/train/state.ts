// Training state (trainable parameters + optimizer buffers + step) as one safetensors blob, so a
// killed run resumes exactly where its last checkpoint was written.
import type { OptimizerStateData } from '../kernels/optimizer.ts';
import { buildHeader, parseSafetensorsHeader } from '../model/safetensors.ts';
import { UserError } from '../util/errors.ts';

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
