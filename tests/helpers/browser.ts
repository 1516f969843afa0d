// A real headless Chromium for tests (Debian's chromium-headless-shell driven by puppeteer-core, which
// downloads no browser). The README's test command installs the browser; where it is missing the
// tests that need it say so and skip.
import { existsSync } from 'node:fs';
import puppeteer, { type Browser } from 'puppeteer-core';

const CANDIDATES = [process.env.CHROMIUM_PATH, '/usr/bin/chromium-headless-shell', '/usr/lib/chromium/chromium-headless-shell', '/usr/bin/chromium'].filter((x): x is string => !!x);

export function chromiumPath(): string | null {
  return CANDIDATES.find((p) => existsSync(p)) ?? null;
}

/** Launches the system browser with the flags a closed network and a root user need. */
export async function launchBrowser(extraArgs: string[] = []): Promise<Browser> {
  const exe = chromiumPath();
  if (!exe) throw new Error('no Chromium found (install chromium-headless-shell)');
  return puppeteer.launch({
    executablePath: exe,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic', ...extraArgs],
  });
}
