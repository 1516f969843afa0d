// npm run web / npm run build:web — the experiments as a web page; see --help.
import path from 'node:path';
import { buildWeb } from '../src/web/build.ts';
import { serveStatic } from '../src/web/server.ts';
import { numberFlag, parseFlags } from '../src/util/cli.ts';
import { runCli, UserError } from '../src/util/errors.ts';
import { checkOutDir } from '../src/util/outpaths.ts';

const ROOT = path.resolve(import.meta.dirname, '..');

const HELP = `usage: npx tsx scripts/web.ts [--build-only] [--out DIR] [--port N] [--host H]

Builds the web page (one esbuild bundle of the same src/ modules the CLIs run, the embedded models
and the MNIST digits) into a static folder, then serves it on localhost and prints the address. The
page runs the MNIST auxiliary-logit experiment and the tiny owl experiment on the visitor's GPU
through WebGPU (navigator.gpu), with live progress, charts and the CLIs' report files.

  npm run web          build and serve (this script)
  npm run build:web    build only (--build-only): a folder any static host can serve

  --out DIR       the static folder (default dist/web; a new or empty folder, or an earlier build's,
                  whose files it replaces — a folder with other files is refused)
  --port N        port to serve on (default 8080; 0 = any free port)
  --host H        address to listen on (default 127.0.0.1; browsers expose WebGPU to http:// pages
                  only on localhost, so serve other hosts over https)
  --build-only    write the folder and exit`;

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), {
    out: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string' },
    'build-only': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (f.help) {
    console.log(HELP);
    return;
  }
  const outDir = path.resolve(String(f.out ?? path.join(ROOT, 'dist', 'web')));
  const port = numberFlag(f.port, 'port', 8080, { min: 0, max: 65535, integer: true });
  const host = String(f.host ?? '127.0.0.1');
  if (f['build-only'] && (f.port !== undefined || f.host !== undefined)) throw new UserError('--port and --host are for serving; --build-only only writes the folder');
  checkOutDir(outDir);
  const t0 = performance.now();
  const built = await buildWeb({ outDir, minify: true });
  console.error(`web: built ${outDir} in ${((performance.now() - t0) / 1000).toFixed(1)} s (${built.files.length} files, app.js ${(built.bundleBytes / 1024).toFixed(0)} KiB)`);
  if (f['build-only']) {
    console.log(outDir);
    return;
  }
  let server;
  try {
    server = await serveStatic(outDir, { port, host });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new UserError(`--port ${port} is in use; pass another (--port 0 picks a free one)`);
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') throw new UserError(`--host ${host}: not an address of this machine`);
    throw e;
  }
  console.log(server.url);
  console.error('web: serving; Ctrl-C stops');
  await new Promise<void>((resolve) => {
    const stop = () => void server.close().then(resolve);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

await runCli(main);
