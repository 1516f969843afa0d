// node:crypto for the web build: the synchronous sha256 hashes stage keys and model identities are
// made of (same digests as Node's), and random bytes from the Web Crypto API.
import { Sha256 } from '../../util/sha256.ts';

class Hash {
  private readonly h = new Sha256();
  update(data: string | Uint8Array): this {
    this.h.update(data);
    return this;
  }
  digest(encoding?: 'hex'): string | Uint8Array {
    return encoding === 'hex' ? this.h.hex() : this.h.digest();
  }
}

export function createHash(algorithm: string): Hash {
  if (algorithm !== 'sha256') throw new Error(`createHash: only sha256 is available in the browser (asked for ${algorithm})`);
  return new Hash();
}

class Bytes extends Uint8Array {
  override toString(encoding?: string): string {
    if (encoding !== 'hex') return super.toString();
    let s = '';
    for (const x of this) s += x.toString(16).padStart(2, '0');
    return s;
  }
}

export function randomBytes(n: number): Bytes {
  const b = new Bytes(n);
  crypto.getRandomValues(b);
  return b;
}

export function randomUUID(): string {
  return crypto.randomUUID();
}

export default { createHash, randomBytes, randomUUID };
