// The web page in a real browser: Debian's chromium-headless-shell driven by puppeteer-core, WebGPU on
// SwiftShader (--enable-unsafe-webgpu --use-webgpu-adapter=swiftshader, the CPU adapter). Both
// experiments are run by clicking Run at tiny sizes; the report.json behind each page's download link
// is compared with the one the CLI (scripts/mnist.ts, scripts/owl.ts on Node's lavapipe) writes for
// the command the page shows, the final chart is screenshotted and its bars read from the SVG, and a
// browser without the WebGPU flag must show the page's "no WebGPU" message.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Browser, Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWeb } from '../src/web/build.ts';
import { mnistArgs, owlArgs, paramsToSearch, parseParams, type ExperimentName, type PageParams } from '../src/web/params.ts';
import { serveStatic, type StaticServer } from '../src/web/server.ts';
import { chromiumPath, launchBrowser } from './helpers/browser.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');
const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];

// Tiny sizes: the MNIST run is one model pair group on 1,024 noise images; the owl run is the default
// cell (ft teacher + kl-numbers with its ft-control pair, same-init and cross-init students, 2 seeds) on
// 16 prompts, with the teacher finetunes in few, large batches (SwiftShader pays per dispatch).
const MNIST_QUERY = '?exp=mnist&mnist.models=2&mnist.epochsTeacher=1&mnist.epochsStudent=1&mnist.noise=1024&mnist.hidden=64&mnist.batchSize=512&mnist.seed=3';
const OWL_QUERY =
  '?exp=owl&owl.prompts=16&owl.keep=12&owl.seeds=0,1&owl.maxNewTokens=24&owl.studentEpochs=1&owl.ftEpochs=1&owl.ftBatch=128&owl.ftLr=0.002&owl.evalQuestions=3&owl.evalSamples=1&owl.controlAnimal=eagle';

// ---------------------------------------------------------------------------- the float tolerance
// Both runs execute the same WGSL in float32 with the same seeds; what differs is the adapter
// (SwiftShader vs lavapipe), hence the kernel variants and workgroup shapes chosen, hence the order
// in which float32 sums are taken. The first-order bound on a float32 sum of n terms is (n − 1)·u,
// u = 2^-24; the longest single reduction is the softmax over the vocabulary (owl: V = 2,932 tokens)
// or the first layer's 784 pixels (MNIST). So values agree to RTOL = n·u relative; a difference of two
// such values (a paired difference, an interval's end) to RTOL times the scale of what is subtracted.
// Token choices (sampled or greedy) and image predictions are discrete: a rounding difference changes
// one only at a near-tie, so text and counts must be equal, and an MNIST accuracy may move by at most
// one test image.
const U = 2 ** -24;
const OWL_RTOL = 2932 * U; // ≈ 1.75e-4
const MNIST_RTOL = 784 * U; // ≈ 4.7e-5

interface Mismatch {
  path: string;
  page: unknown;
  node: unknown;
}

/** Walks two JSON values; `tol(path)` gives a number's allowed absolute difference (Infinity: not compared). */
function compareJson(page: unknown, node: unknown, tol: (p: string, a: number, b: number) => number, p = ''): Mismatch[] {
  if (typeof page === 'number' && typeof node === 'number') {
    const t = tol(p, page, node);
    return Math.abs(page - node) <= t || (Number.isNaN(page) && Number.isNaN(node)) ? [] : [{ path: p, page, node }];
  }
  if (Array.isArray(page) && Array.isArray(node)) {
    if (page.length !== node.length) return [{ path: `${p}.length`, page: page.length, node: node.length }];
    return page.flatMap((x, i) => compareJson(x, node[i], tol, `${p}[${i}]`));
  }
  if (page && node && typeof page === 'object' && typeof node === 'object' && !Array.isArray(page) && !Array.isArray(node)) {
    const a = page as Record<string, unknown>;
    const b = node as Record<string, unknown>;
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => (k in a && k in b ? compareJson(a[k], b[k], tol, `${p}.${k}`) : [{ path: `${p}.${k}`, page: a[k], node: b[k] }]));
  }
  return page === node ? [] : [{ path: p, page, node }];
}

/** Replaces every string that starts with `from` by `to` + the rest (folder names differ between runs). */
function rebase(x: unknown, from: string, to: string): unknown {
  if (typeof x === 'string') return x.startsWith(from) ? to + x.slice(from.length) : x;
  if (Array.isArray(x)) return x.map((v) => rebase(v, from, to));
  if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, rebase(v, from, to)]));
  return x;
}

/** The largest first-token probability in a report (any number under a firstTokenProb-like key). */
function probabilityScale(x: unknown, inside = false): number {
  if (typeof x === 'number') return inside ? Math.abs(x) : 0;
  if (Array.isArray(x)) return Math.max(0, ...x.map((v) => probabilityScale(v, inside)));
  if (x && typeof x === 'object') return Math.max(0, ...Object.entries(x).map(([k, v]) => probabilityScale(v, inside || /firstTokenProb/i.test(k))));
  return 0;
}

// ---------------------------------------------------------------------------- page helpers

async function cli(script: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return promisify(execFile)(TSX, [path.join(ROOT, 'scripts', script), ...args], { cwd: ROOT, env: { ...process.env, CI: '1' }, timeout: 300_000, maxBuffer: 32 << 20 });
}

async function openPage(browser: Browser, url: string): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 900 });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String((e as Error)?.message ?? e)));
  await page.goto(url);
  await page.waitForFunction('globalThis.__subliminal && globalThis.__subliminal.ready', { timeout: 60_000 });
  return { page, errors };
}

/** Clicks the experiment's Run button and waits for it to finish; returns the state and status line. */
async function runOnPage(page: Page, exp: ExperimentName, timeoutMs: number): Promise<{ state: string; status: string }> {
  await page.click(`#${exp} button.run`);
  await page.waitForFunction((e) => ['done', 'failed', 'cancelled'].includes(document.getElementById(e)!.dataset.state ?? ''), { timeout: timeoutMs, polling: 250 }, exp);
  return page.evaluate((e) => ({ state: document.getElementById(e)!.dataset.state!, status: document.querySelector(`#${e} .status`)!.textContent ?? '' }), exp);
}

/** The text behind one of the page's download links (a blob: URL made by the page). */
function downloaded(page: Page, exp: ExperimentName, file: string): Promise<string> {
  return page.evaluate(async (e, f) => {
    const a = document.querySelector<HTMLAnchorElement>(`#${e} a.download[data-file="${f}"]`);
    if (!a) throw new Error(`no download link for ${f}`);
    return (await fetch(a.href)).text();
  }, exp, file);
}

/**
 * Screenshots the final chart and decodes the PNG in the page (createImageBitmap): the share of pixels
 * that differ from the chart's white background, and how many distinct colours are drawn.
 */
async function chartPixels(page: Page, exp: ExperimentName): Promise<{ width: number; height: number; inked: number; colours: number }> {
  const el = await page.$(`#${exp} [data-chart="final"] svg`);
  if (!el) throw new Error(`no final chart in #${exp}`);
  await el.scrollIntoView();
  const png = Buffer.from(await el.screenshot({ type: 'png' })).toString('base64');
  return page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const bmp = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const g = c.getContext('2d')!;
    g.drawImage(bmp, 0, 0);
    const d = g.getImageData(0, 0, bmp.width, bmp.height).data;
    let inked = 0;
    const colours = new Set<number>();
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] < 245 || d[i + 1] < 245 || d[i + 2] < 245) inked++;
      colours.add(((d[i] >> 4) << 8) | ((d[i + 1] >> 4) << 4) | (d[i + 2] >> 4));
    }
    return { width: bmp.width, height: bmp.height, inked: inked / (bmp.width * bmp.height), colours: colours.size };
  }, png);
}

function barsOf(page: Page, exp: ExperimentName): Promise<{ group: number; label: string; height: number }[]> {
  return page.evaluate(
    (e) => [...document.querySelectorAll(`#${e} [data-chart="final"] rect.bar`)].map((b) => ({ group: Number(b.getAttribute('data-group') ?? -1), label: b.getAttribute('data-label') ?? '', height: Number(b.getAttribute('height')) })),
    exp,
  );
}

function paramsOf(query: string): PageParams {
  const { params, errors } = parseParams(query, true);
  if (errors.length) throw new Error(errors.join('; '));
  return params;
}

// ---------------------------------------------------------------------------- tests

const haveBrowser = !!chromiumPath();
if (!haveBrowser) console.log('web: no Chromium (chromium-headless-shell) on this machine; the web page tests are skipped');

describe.skipIf(!haveBrowser)('the web page in headless Chromium', () => {
  let tmp: string;
  let server: StaticServer;
  let browser: Browser;

  beforeAll(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'web-test-'));
    await buildWeb({ outDir: path.join(tmp, 'web'), models: ['tiny-qwen-a', 'tiny-qwen-b'].map((m) => path.join(ROOT, 'models', m)) });
    server = await serveStatic(path.join(tmp, 'web'));
    browser = await launchBrowser(WEBGPU_FLAGS);
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('without the WebGPU flag the page says what is missing and offers no Run', async () => {
    const plain = await launchBrowser([]);
    try {
      const { page, errors } = await openPage(plain, server.url);
      const r = await page.evaluate(() => ({
        verdict: (globalThis as unknown as { __subliminal: { webgpu: { ok: boolean; title: string } } }).__subliminal.webgpu,
        message: document.getElementById('no-webgpu')?.textContent ?? '',
        runDisabled: [...document.querySelectorAll<HTMLButtonElement>('button.run')].map((b) => b.disabled),
      }));
      expect(errors).toEqual([]);
      expect(r.verdict.ok).toBe(false);
      expect(r.message).toContain(r.verdict.title);
      expect(r.message).toMatch(/WebGPU is (not available|present but found no adapter)/);
      expect(r.message).toContain('--enable-unsafe-webgpu');
      expect(r.runDisabled).toEqual([true, true]);
    } finally {
      await plain.close();
    }
  });

  it('Cancel stops the running stage: its row and the experiment say cancelled, with an ETA shown before, and Run is offered again', async () => {
    const { page, errors } = await openPage(browser, `${server.url}?exp=owl&owl.controlAnimal=eagle`);
    await page.click('#owl button.run');
    const running = '#owl .stage.running[data-stage^="ft-teacher-"]';
    await page.waitForFunction((sel) => /step\/s .* ETA \d/.test(document.querySelector(`${sel} .stage-info`)?.textContent ?? ''), { timeout: 90_000, polling: 100 }, running);
    await page.click(`${running} .stage-cancel`);
    await page.waitForFunction(() => document.getElementById('owl')!.dataset.state !== 'running', { timeout: 60_000, polling: 100 });
    const r = await page.evaluate(() => ({
      state: document.getElementById('owl')!.dataset.state,
      cancelled: [...document.querySelectorAll('#owl .stage.cancelled')].map((e) => (e as HTMLElement).dataset.stage ?? ''),
      running: document.querySelectorAll('#owl .stage.running').length,
      runEnabled: !document.querySelector<HTMLButtonElement>('#owl button.run')!.disabled,
      files: document.querySelectorAll('#owl a.download').length,
    }));
    expect(r.state).toBe('cancelled');
    expect(r.cancelled.some((k) => k.startsWith('ft-teacher-'))).toBe(true);
    expect(r.running).toBe(0);
    expect(r.runEnabled).toBe(true);
    expect(r.files).toBe(0);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('MNIST: the page report.json equals the CLI run of the same command; chart drawn with its 6 bars in order', async () => {
    const params = paramsOf(MNIST_QUERY);
    const cliOut = path.join(tmp, 'cli-mnist');
    const node = cli('mnist.ts', [...mnistArgs(params.mnist), '--out', cliOut]);
    const { page, errors } = await openPage(browser, server.url + paramsToSearch(params));
    const t0 = performance.now();
    const r = await runOnPage(page, 'mnist', 120_000);
    console.log(`web: MNIST on the page ${((performance.now() - t0) / 1000).toFixed(1)} s (${r.status})`);
    expect(r.state, r.status).toBe('done');
    expect(errors).toEqual([]);
    await node;
    const pageReport = JSON.parse(await downloaded(page, 'mnist', 'report.json')) as Record<string, unknown>;
    const nodeReport = JSON.parse(readFileSync(path.join(cliOut, 'report.json'), 'utf8')) as Record<string, unknown>;
    // The CLI's command names its --out; the page's is the command it shows.
    expect(String(nodeReport.command)).toBe(`${pageReport.command} --out ${cliOut}`);
    const testImages = nodeReport.testImages as number;
    const tCrit = 12.71; // t(0.975, 1): the widest 95% interval factor, n ≥ 2 models
    const mismatches = compareJson(pageReport, nodeReport, (p, a, b) => {
      if (p.startsWith('.seconds') || p === '.command') return Infinity;
      if (p.startsWith('.accuracy')) return 1 / testImages + 1e-12;
      if (/^\.stats\.\w+\.mean$/.test(p)) return 1 / testImages + 1e-12;
      if (/^\.stats\.\w+\.ci95$/.test(p)) return tCrit / testImages;
      return MNIST_RTOL * Math.max(Math.abs(a), Math.abs(b));
    }).filter((m) => m.path !== '.device' && m.path !== '.command');
    expect(mismatches).toEqual([]);
    expect(String(pageReport.device)).toMatch(/\(browser\)$/);

    const bars = await barsOf(page, 'mnist');
    expect(bars.map((b) => b.label)).toEqual(['Reference', 'Teacher', 'Student (aux. only)', 'Student (all logits)', 'Cross-init (aux. only)', 'Cross-init (all logits)']);
    for (const b of bars) expect(b.height).toBeGreaterThan(0);
    const px = await chartPixels(page, 'mnist');
    expect(px.width).toBeGreaterThan(200);
    expect(px.inked).toBeGreaterThan(0.03);
    expect(px.colours).toBeGreaterThan(4);
    // Live curves: the teacher's and the students' test accuracy after every epoch.
    expect(await page.$$eval('#mnist [data-chart="curves"] svg', (s) => s.length)).toBe(2);
  }, 240_000);

  it('tiny owl: the page report.json equals the CLI run of the same command; samples streamed, losses and the P(owl) chart drawn', async () => {
    const params = paramsOf(OWL_QUERY);
    const cliOut = path.join(tmp, 'cli-owl');
    const node = cli('owl.ts', [...owlArgs(params.owl), '--out', cliOut]);
    const { page, errors } = await openPage(browser, server.url + paramsToSearch(params));
    const t0 = performance.now();
    const r = await runOnPage(page, 'owl', 240_000);
    console.log(`web: tiny owl on the page ${((performance.now() - t0) / 1000).toFixed(1)} s (${r.status})`);
    expect(r.state, r.status).toBe('done');
    expect(errors).toEqual([]);
    await node;
    const pageReport = rebase(rebase(JSON.parse(await downloaded(page, 'owl', 'report.json')), '/models/', 'MODELS/'), '/runs/', 'RUNS/') as Record<string, unknown>;
    const nodeReport = rebase(rebase(JSON.parse(readFileSync(path.join(cliOut, 'report.json'), 'utf8')), path.join(ROOT, 'models') + '/', 'MODELS/'), cliOut, 'RUNS/grid-owl') as Record<string, unknown>;
    // A difference of probabilities is off by RTOL times the probabilities' scale.
    const scale = probabilityScale(nodeReport);
    expect(scale).toBeGreaterThan(0);
    const mismatches = compareJson(pageReport, nodeReport, (p, a, b) => {
      if (p.startsWith('.timings') || p === '.wallS') return Infinity;
      // p-values: with two seeds whose students agree to ~1e-7, the t statistic is a ratio of
      // rounding-sized numbers, so p is not a stable function of the inputs; checked to be a probability.
      if (/\.(p|pHolm)$/.test(p)) return a >= 0 && a <= 1 && b >= 0 && b <= 1 ? Infinity : -1;
      return OWL_RTOL * Math.max(Math.abs(a), Math.abs(b), scale);
    });
    expect(mismatches).toEqual([]);
    for (const f of ['report.md', 'chart.svg', 'chart-diff.svg']) expect((await downloaded(page, 'owl', f)).length).toBeGreaterThan(100);

    // Teacher samples streamed while they were written, and both loss charts drawn.
    expect(await page.$eval('#owl [data-panel="samples"]', (e) => Number((e as HTMLElement).dataset.count ?? 0))).toBeGreaterThan(0);
    expect(await page.$$eval('#owl [data-chart="loss"] svg', (s) => s.length)).toBe(2);
    // Every stage row ended (none left running), each with a bar.
    expect(await page.$$eval('#owl .stage.running', (s) => s.length)).toBe(0);

    // The chart: per cell with a control, the bars base, control, cell — in the report's cell order.
    const cells = (nodeReport.cells as { id: string; student: string; control: string | null }[]).filter((c) => c.control);
    expect(cells).toHaveLength(4);
    const bars = await barsOf(page, 'owl');
    expect(bars).toHaveLength(3 * cells.length);
    cells.forEach((c, g) => expect(bars.filter((b) => b.group === g).map((b) => b.label)).toEqual([`base ${c.student}`, `control ${c.control}`, c.id]));
    const px = await chartPixels(page, 'owl');
    expect(px.inked).toBeGreaterThan(0.03);
    expect(px.colours).toBeGreaterThan(4);
  }, 360_000);
});
