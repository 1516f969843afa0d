// The web page: the MNIST auxiliary-logit experiment and the tiny owl experiment on the visitor's
// GPU through navigator.gpu, running the same src/ modules as the CLIs. Files live in an in-memory
// file system (the embedded models are fetched into it); stage results in a memory stage cache.
import { useFileSystem } from '../../util/files.ts';
import { checkOwl, EXPERIMENTS, paramsToSearch, parseParams, type ExperimentName, type PageParams } from '../params.ts';
import { webgpuVerdict, type WebGpuProbe, type WebGpuVerdict } from '../webgpu-check.ts';
import { h } from './dom.ts';
import { MnistView } from './mnist-view.ts';
import { OwlView } from './owl-view.ts';
import { cancelRun, memfs } from './runtime.ts';
import type { View } from './view.ts';

useFileSystem(memfs);

/** What the tests read: readiness, the WebGPU verdict, each view's state and report files. */
interface PageHandle {
  ready: boolean;
  webgpu: WebGpuVerdict | null;
  adapterSoftware: boolean | null;
  views: Partial<Record<ExperimentName, View>>;
  errors: string[];
}
const handle: PageHandle = { ready: false, webgpu: null, adapterSoftware: null, views: {}, errors: [] };
(globalThis as { __subliminal?: PageHandle }).__subliminal = handle;

async function probe(): Promise<{ probe: WebGpuProbe; software: boolean }> {
  const nav = navigator as Navigator & { gpu?: GPU };
  const p: WebGpuProbe = { secureContext: window.isSecureContext, hasNavigatorGpu: !!nav.gpu, adapter: null, deviceError: null, userAgent: navigator.userAgent };
  let software = false;
  if (p.secureContext && nav.gpu) {
    const adapter = await nav.gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null);
    p.adapter = !!adapter;
    if (adapter) {
      const i = adapter.info;
      software = /llvmpipe|lavapipe|swiftshader|software|warp|microsoft basic render/i.test(`${i.vendor} ${i.architecture} ${i.device} ${i.description}`) || !!(adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
      try {
        const d = await adapter.requestDevice();
        d.destroy();
      } catch (e) {
        p.deviceError = (e as Error).message;
      }
    }
  }
  return { probe: p, software };
}

async function main(): Promise<void> {
  const app = document.getElementById('app')!;
  const { probe: pr, software } = await probe();
  const verdict = webgpuVerdict(pr);
  handle.webgpu = verdict;
  handle.adapterSoftware = pr.adapter ? software : null;
  const { params, errors } = parseParams(location.search, software);
  handle.errors = errors;
  const state: PageParams = params;
  let mnist: MnistView | null = null;
  let owl: OwlView | null = null;
  const syncUrl = () => {
    const m = mnist?.form.read().values;
    const o = owl?.form.read(checkOwl).values;
    if (m) state.mnist = m;
    if (o) state.owl = o;
    history.replaceState(null, '', paramsToSearch(state) + location.hash);
  };
  const hooks = {
    onParams: () => syncUrl(),
    onRunning: (on: boolean) => {
      for (const v of Object.values(views)) v.setRunnable(!on && verdict.ok);
    },
    cancel: () => cancelRun(),
  };
  mnist = new MnistView(state.mnist, hooks);
  owl = new OwlView(state.owl, hooks);
  const views: Record<ExperimentName, View> = { mnist, owl };
  handle.views = views;

  const tabs = EXPERIMENTS.map((e) =>
    h('button', { type: 'button', role: 'tab', class: 'tab', 'data-exp': e, 'aria-selected': String(e === state.exp), onclick: () => select(e) }, e === 'mnist' ? 'MNIST auxiliary logits' : 'Tiny owl'),
  );
  const select = (e: ExperimentName) => {
    state.exp = e;
    for (const t of tabs) t.setAttribute('aria-selected', String(t.dataset.exp === e));
    for (const [k, v] of Object.entries(views)) v.el.hidden = k !== e;
    syncUrl();
  };
  const share = h('button', { type: 'button', class: 'share' }, 'Copy link to these parameters');
  share.addEventListener('click', () => {
    syncUrl();
    void navigator.clipboard?.writeText(location.href).then(
      () => (share.textContent = 'Link copied'),
      () => (share.textContent = 'Copy the address bar: it holds the parameters'),
    );
  });

  const banner = verdict.ok
    ? null
    : h('div', { class: 'no-webgpu', role: 'alert', id: 'no-webgpu' }, h('h2', {}, verdict.title), h('ul', {}, ...verdict.advice.map((a) => h('li', {}, a))), h('p', {}, 'The experiments are described below; they run once WebGPU is available.'));
  const paramErrors = errors.length ? h('div', { class: 'param-errors url-errors', role: 'alert' }, h('p', {}, 'Some parameters in the address were not used:'), h('ul', {}, ...errors.map((e) => h('li', {}, `error: ${e}`)))) : null;
  app.replaceChildren(
    h(
      'header',
      {},
      h('h1', {}, 'Subliminal learning on your GPU'),
      h(
        'p',
        {},
        'Cloud et al. (2025) found that a model can pass a trait to a student through data that has nothing to do with it — numbers, or noise images — when teacher and student share their initialisation. These are two of their experiments, run here in your browser with WebGPU compute shaders: the same TypeScript and WGSL as the command-line tools, with the same reports.',
      ),
      h('p', { class: 'adapter' }, verdict.ok ? `WebGPU adapter found${software ? ' (a software adapter: expect minutes, not seconds; the defaults are sized for it)' : ''}.` : ''),
    ),
    ...(banner ? [banner] : []),
    ...(paramErrors ? [paramErrors] : []),
    h('nav', { role: 'tablist' }, ...tabs, share),
    mnist.el,
    owl.el,
    h('footer', {}, 'Stages run in this tab; nothing is uploaded. Float32 throughout.'),
  );
  for (const v of Object.values(views)) v.setRunnable(verdict.ok);
  select(state.exp);
  handle.ready = true;
  document.body.dataset.ready = '1';
}

main().catch((e) => {
  const app = document.getElementById('app');
  if (app) app.replaceChildren(h('div', { class: 'no-webgpu', role: 'alert' }, h('h2', {}, 'The page failed to start'), h('p', {}, `error: ${(e as Error)?.message ?? String(e)}`)));
  console.error(e);
  handle.ready = true;
});
