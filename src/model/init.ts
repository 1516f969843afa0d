/**
 * Seeded random initial weights, one tensor at a time. Every tensor's values depend only on (seed,
 * tensor name), never on write order or sharding. The tiny models' initialisation
 * (src/experiment/tiny/models.ts) and the tests' random checkpoints use it.
 */
import { SeedStreamRng } from '../util/rng.ts';

/**
 * Values of one random tensor. Matrices [out, in] ~ N(0, (scale/√in)²); embeddings ~ N(0, scale²);
 * biases ~ N(0, (0.5·scale)²); norm weights ~ 1 + N(0, 0.1²) (non-trivial so a missing ·weight
 * in a kernel shows up).
 */
export function randomTensorValues(name: string, shape: number[], seed: number, scale = 1): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const rng = new SeedStreamRng(seed, name);
  const out = new Float32Array(n);
  if (/norm\.weight$/.test(name)) return rng.fillNormal(out, 1, 0.1);
  if (name.endsWith('.bias')) return rng.fillNormal(out, 0, 0.5 * scale);
  if (name === 'model.embed_tokens.weight') return rng.fillNormal(out, 0, scale);
  const inDim = shape[shape.length - 1] ?? 1;
  return rng.fillNormal(out, 0, scale / Math.sqrt(inDim));
}
