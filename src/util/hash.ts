// Content hashes (sha256, hex) of inputs, so a resumed or cached run is matched to the bytes it was made
// from, not to a path whose file may have changed since.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { UserError } from './errors.ts';
import { errnoText } from './outpaths.ts';

export function hashBytes(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 of a file, streamed (model weights can be gigabytes). */
export async function hashFile(file: string): Promise<string> {
  const h = createHash('sha256');
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 22 })) h.update(chunk as Buffer);
  } catch (e) {
    throw new UserError(`${file}: cannot read (${errnoText(e)})`);
  }
  return h.digest('hex');
}

export interface ModelHashes {
  /** config.json */
  config: string;
  /** every *.safetensors file and the shard index, by name */
  weights: string;
  /** tokenizer.json, tokenizer_config.json and the other tokenizer files present (null: none) */
  tokenizer: string | null;
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'];

/** Content hashes of a Hugging Face model (or adapter) folder: what decides the model's outputs. */
export async function hashModelFolder(dir: string): Promise<ModelHashes> {
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch (e) {
    throw new UserError(`${dir}: cannot read the model folder (${errnoText(e)})`);
  }
  const combine = async (files: string[]) => {
    const h = createHash('sha256');
    for (const f of files) h.update(`${f}\0${await hashFile(path.join(dir, f))}\n`);
    return h.digest('hex');
  };
  const weightFiles = names.filter((f) => f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json'));
  const tokFiles = TOKENIZER_FILES.filter((f) => names.includes(f));
  return {
    config: existsSync(path.join(dir, 'config.json')) ? await hashFile(path.join(dir, 'config.json')) : '',
    weights: await combine(weightFiles),
    tokenizer: tokFiles.length ? await combine(tokFiles) : null,
  };
}
