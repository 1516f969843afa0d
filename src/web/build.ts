// The web page's build: one esbuild bundle of src/web/page/main.ts (the same src/ modules the CLIs
// run), the page's static files, the embedded models and the MNIST digits, written into a folder
// any static host can serve.
//
// Node built-ins reached from shared modules resolve to browser pieces: node:path to a POSIX path
// implementation, node:crypto to a synchronous sha256 (stage keys and model identities are computed
// synchronously), everything else to a stub that throws when used (those paths are Node-only; files
// go through util/files.ts). Packages the page never runs are stubbed the same way: Node's `webgpu`
// (the browser has navigator.gpu) and onnxruntime (transformers.js is used for its tokenizer only).
import { builtinModules, createRequire } from 'node:module';
import { copyFileSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { mnistDigitsFile } from '../experiment/mnist/data.ts';
import { assertRunFolderUsable, clearRunOutputs, initRunFolder, markRunComplete, removeIfEmpty, runLock } from '../util/runfolder.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const SHIMS = path.join(ROOT, 'src/web/shims');
const PAGE = path.join(ROOT, 'src/web/page');

/** Packages that must never run in the page (resolved to throwing stubs). */
const STUBBED_PACKAGES = ['webgpu', 'onnxruntime-web', 'onnxruntime-web/webgpu', 'onnxruntime-common', 'onnxruntime-node', 'sharp'];

/** The model files the page fetches (what ChatTokenizer and Transformer.load read). */
export const MODEL_FILES = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

export interface WebBuildOptions {
  outDir: string;
  /** Model folders copied into models/<name>/ (default: every folder in models/). */
  models?: string[];
  minify?: boolean;
  /** Extra entry points (tests), bundled next to app.js. */
  extraEntries?: Record<string, string>;
}

export interface WebBuildResult {
  outDir: string;
  files: string[];
  bundleBytes: number;
  /** Node-only modules the bundle references (stubbed); for the build log. */
  stubbed: string[];
}

function nodeBuiltinsPlugin(stubbed: Set<string>): esbuild.Plugin {
  const builtins = new Set(builtinModules.filter((m) => !m.startsWith('_')));
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const filter = new RegExp(`^(node:)?(${[...builtins].map(escape).join('|')})$`);
  const pkgFilter = new RegExp(`^(${STUBBED_PACKAGES.map(escape).join('|')})$`);
  return {
    name: 'node-builtins',
    setup(b) {
      b.onResolve({ filter }, (a) => {
        const name = a.path.replace(/^node:/, '');
        if (name === 'path') return { path: path.join(SHIMS, 'path.ts') };
        if (name === 'crypto') return { path: path.join(SHIMS, 'crypto.ts') };
        return { path: name, namespace: 'node-only' };
      });
      b.onResolve({ filter: pkgFilter }, (a) => ({ path: a.path, namespace: 'package-only' }));
      b.onLoad({ filter: /.*/, namespace: 'node-only' }, (a) => {
        stubbed.add(`node:${a.path}`);
        // The stub exports what the real module exports, so named imports of it still bundle.
        const real = createRequire(import.meta.url)(`node:${a.path}`) as Record<string, unknown>;
        const names = Object.keys(real).filter((k) => k !== 'default' && /^[A-Za-z_$][\w$]*$/.test(k));
        return { contents: stubModule(`node:${a.path}`, names), loader: 'js', resolveDir: SHIMS };
      });
      b.onLoad({ filter: /.*/, namespace: 'package-only' }, (a) => {
        stubbed.add(a.path);
        // onnxruntime-common's Tensor is imported by name; the rest are namespace imports.
        return { contents: stubModule(a.path, ['Tensor', 'create', 'globals']), loader: 'js', resolveDir: SHIMS };
      });
    },
  };
}

function stubModule(what: string, names: string[]): string {
  const lines = [`import { unavailable } from ${JSON.stringify(path.join(SHIMS, 'unavailable.ts'))};`];
  for (const n of names) lines.push(`export const ${n} = unavailable(${JSON.stringify(`${what} ${n}`)});`);
  lines.push(`export default unavailable(${JSON.stringify(what)});`);
  return lines.join('\n');
}

function listFiles(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, base));
    else out.push(path.relative(base, p));
  }
  return out.sort();
}

export function embeddedModels(): string[] {
  const dir = path.join(ROOT, 'models');
  return readdirSync(dir)
    .filter((d) => statSync(path.join(dir, d, 'config.json'), { throwIfNoEntry: false })?.isFile())
    .sort()
    .map((d) => path.join(dir, d));
}

export const WEB_TOOL = 'web.ts';

/**
 * Bundles the page and writes the static folder. The folder must be new, empty or an earlier build's
 * (its marker lists what the build wrote; only that is replaced, a user's own files are refused).
 */
export async function buildWeb(opts: WebBuildOptions): Promise<WebBuildResult> {
  const outDir = path.resolve(opts.outDir);
  const outputs = ['index.html', 'style.css', 'models/', 'data/', ...['app', ...Object.keys(opts.extraEntries ?? {})].flatMap((e) => [`${e}.js`, `${e}.js.map`])];
  assertRunFolderUsable(outDir, WEB_TOOL);
  const { lock, created } = await runLock(outDir, WEB_TOOL);
  try {
    await clearRunOutputs(outDir, WEB_TOOL);
    await initRunFolder(outDir, WEB_TOOL, outputs);
    const r = await writeBuild(outDir, opts);
    await markRunComplete(outDir, WEB_TOOL);
    return r;
  } catch (e) {
    await lock.release();
    if (created) removeIfEmpty(outDir);
    throw e;
  } finally {
    await lock.release();
  }
}

async function writeBuild(outDir: string, opts: WebBuildOptions): Promise<WebBuildResult> {
  const stubbed = new Set<string>();
  const result = await esbuild.build({
    entryPoints: { app: path.join(PAGE, 'main.ts'), ...(opts.extraEntries ?? {}) },
    outdir: outDir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: 'linked',
    minify: !!opts.minify,
    legalComments: 'none',
    logLevel: 'silent',
    metafile: true,
    plugins: [nodeBuiltinsPlugin(stubbed)],
  });
  for (const w of result.warnings) if (!/will always be undefined/.test(w.text)) console.error(`web build: warning: ${w.text}`);
  for (const f of ['index.html', 'style.css']) copyFileSync(path.join(PAGE, f), path.join(outDir, f));
  // Models: each folder's files and a listing the page reads first.
  const models = opts.models ?? embeddedModels();
  const listing: Record<string, { files: Record<string, number> }> = {};
  for (const m of models) {
    const name = path.basename(m);
    const dst = path.join(outDir, 'models', name);
    mkdirSync(dst, { recursive: true });
    const files: Record<string, number> = {};
    for (const f of MODEL_FILES) {
      const src = path.join(m, f);
      const st = statSync(src, { throwIfNoEntry: false });
      if (!st) continue;
      copyFileSync(src, path.join(dst, f));
      files[f] = st.size;
    }
    listing[name] = { files };
  }
  writeFileSync(path.join(outDir, 'models', 'index.json'), JSON.stringify(listing, null, 2) + '\n');
  mkdirSync(path.join(outDir, 'data'), { recursive: true });
  writeFileSync(path.join(outDir, 'data', 'mnist-digits.bin'), mnistDigitsFile());
  const bundleBytes = Object.entries(result.metafile.outputs)
    .filter(([f]) => f.endsWith('.js'))
    .reduce((a, [, o]) => a + o.bytes, 0);
  return { outDir, files: listFiles(outDir).filter((f) => !f.startsWith('.run.')), bundleBytes, stubbed: [...stubbed].sort() };
}
