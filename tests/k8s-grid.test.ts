// scripts/grid.ts k8s: the Indexed Job (one completion per cell group), the merge Job and the
// ReadWriteMany claim, validated against the Job/claim structure (tests/helpers/k8s-schema.ts; no
// cluster runs here), read back from the YAML as written, and the one-line refusals.
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { tinyConfigJson, writeRandomCheckpoint } from './helpers/checkpoint.ts';
import { toYaml } from '../src/util/yaml.ts';
import { readYaml, validateK8s } from './helpers/k8s-schema.ts';
import { writeTestTokenizer } from './helpers/tokenizer-fixture.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');
let vol: string;
let manifest: string;

async function grid(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(TSX, [path.join(ROOT, 'scripts', 'grid.ts'), ...args], { cwd: ROOT, env: { ...process.env, CI: '1' } });
    return { code: 0, ...r };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

beforeAll(async () => {
  // The "volume": project, models, manifest and grid folder all under one mount path.
  vol = mkdtempSync(path.join(os.tmpdir(), 'k8s-vol-'));
  for (const [name, seed] of [['qwen-a', 1], ['qwen-b', 2]] as const) {
    const dir = path.join(vol, 'models', name);
    mkdirSync(dir, { recursive: true });
    const V = writeTestTokenizer(dir);
    await writeRandomCheckpoint(dir, tinyConfigJson('qwen2', { vocab_size: V, eos_token_id: V - 1, tie_word_embeddings: true }), { dtype: 'F32', seed });
  }
  manifest = path.join(vol, 'grid.json');
  writeFileSync(manifest, JSON.stringify({
    name: 'Fig3_tiny', teacherBase: 'models/qwen-a', traits: ['owl', 'cat', { name: 'oak', category: 'tree' }],
    teachers: ['sp'], recipes: ['sft'], students: ['models/qwen-a', 'models/qwen-b'],
    k8s: { image: 'registry.example/subliminal:1', namespace: 'research', mountPath: vol, storageClass: 'nfs-rwx', storage: '50Gi', gpus: 1, parallelism: 4 },
  }));
});

describe('Kubernetes manifests for a grid', () => {
  it('an Indexed Job, a merge Job and a ReadWriteMany claim that pass the Job schema', async () => {
    const r = await grid(['k8s', manifest, '--repo', path.join(vol, 'repo')]);
    expect(r.code, r.stderr).toBe(0);
    const docs = readYaml(r.stdout) as Record<string, any>[];
    expect(docs.map((d) => `${d.apiVersion} ${d.kind}`)).toEqual(['v1 PersistentVolumeClaim', 'batch/v1 Job', 'batch/v1 Job']);
    for (const d of docs) expect(validateK8s(d), `${d.kind} ${d.metadata.name}`).toEqual([]);
    const [pvc, shards, merge] = docs;
    expect(pvc.spec.accessModes).toEqual(['ReadWriteMany']);
    expect(pvc.spec).toMatchObject({ storageClassName: 'nfs-rwx', resources: { requests: { storage: '50Gi' } } });
    // 3 traits × 2 students: 6 cell groups, one completion each.
    expect(shards.spec).toMatchObject({ completionMode: 'Indexed', completions: 6, parallelism: 4, backoffLimitPerIndex: 2 });
    const c = shards.spec.template.spec.containers[0];
    expect(c.image).toBe('registry.example/subliminal:1');
    expect(c.args).toEqual(['scripts/owl.ts', '--grid', manifest, '--shard', 'auto', '--shards', '6', '--out', path.join(vol, 'repo', 'runs', 'Fig3_tiny'), '--cache', path.join(vol, 'repo', 'runs', 'Fig3_tiny')]);
    expect(c.resources.limits['nvidia.com/gpu']).toBe(1);
    expect(shards.spec.template.spec.volumes).toEqual([{ name: 'work', persistentVolumeClaim: { claimName: pvc.metadata.name } }]);
    expect(c.volumeMounts).toEqual([{ name: 'work', mountPath: vol }]);
    expect(shards.metadata).toMatchObject({ name: 'fig3-tiny-shards', namespace: 'research' });
    const mc = merge.spec.template.spec.containers[0];
    expect(mc.args).toContain('--merge');
    expect(mc.args).toContain('--wait');
    expect(mc.resources).toBeUndefined();
    expect(merge.spec.completionMode).toBeUndefined();
    // Cross-check with a real YAML reader where one is installed.
    const py = spawnSync('python3', ['-c', 'import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))'], { input: r.stdout, encoding: 'utf8' });
    if (py.status === 0) expect(JSON.parse(py.stdout)).toEqual(docs);
    // An existing claim: no claim object, the Job mounts it.
    const r2 = await grid(['k8s', manifest, '--repo', path.join(vol, 'repo'), '--claim', 'shared-rwx', '--gpus', '0', '--image', 'other:2']);
    const d2 = readYaml(r2.stdout) as Record<string, any>[];
    expect(d2.map((d) => d.kind)).toEqual(['Job', 'Job']);
    for (const d of d2) expect(validateK8s(d)).toEqual([]);
    expect(d2[0].spec.template.spec.volumes[0].persistentVolumeClaim.claimName).toBe('shared-rwx');
    expect(d2[0].spec.template.spec.containers[0].resources).toBeUndefined();
    expect(d2[0].spec.template.spec.containers[0].image).toBe('other:2');
  }, 120_000);

  it('the schema check catches what a cluster would refuse', () => {
    const job = readYaml(toYaml([{ apiVersion: 'batch/v1', kind: 'Job', metadata: { name: 'x' }, spec: { completionMode: 'Indexd', backoffLimitPerIndex: 1, template: { spec: { restartPolicy: 'Always', containers: [{ name: 'c', image: 'i', volumeMount: [] }] } } } }]))[0] as Record<string, unknown>;
    const errs = validateK8s(job);
    expect(errs).toContain("batch/v1 Job.spec.completionMode: 'Indexd' is not one of NonIndexed, Indexed");
    expect(errs).toContain("batch/v1 Job.spec.template.spec.containers[0]: unknown field 'volumeMount'");
    expect(errs).toContain("a Job's pods must restart Never or OnFailure, not Always");
    expect(errs).toContain('backoffLimitPerIndex needs completionMode Indexed');
  });

  it('refuses in one line: no image, a path off the volume, an option of the other kind, a file it did not write', async () => {
    const noImage = path.join(vol, 'noimage.json');
    writeFileSync(noImage, JSON.stringify({ ...JSON.parse(readFileSync(manifest, 'utf8')), k8s: { mountPath: vol } }));
    const mine = path.join(vol, 'notes.yaml');
    writeFileSync(mine, 'my notes\n');
    const cases: [string[], RegExp][] = [
      [['k8s', noImage, '--repo', path.join(vol, 'repo')], /^error: k8s: set the container image/],
      [['k8s', manifest], /^error: k8s: the project folder .* is not on the volume/],
      [['k8s', manifest, '--partition', 'gpu'], /^error: --partition is a slurm option/],
      [['slurm', manifest, '--image', 'x'], /^error: --image is a k8s option/],
      [['k8s', manifest, '--repo', path.join(vol, 'repo'), '--out', mine], /^error: --out .*notes\.yaml exists and was not written by grid\.ts/],
      [['nomad', manifest], /^error: unknown command 'nomad'/],
    ];
    for (const [args, re] of cases) {
      const r = await grid(args);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(re);
    }
    expect(readFileSync(mine, 'utf8')).toBe('my notes\n');
    // Written to a file, then replaced by a rerun (its own file).
    const out = path.join(vol, 'jobs.yaml');
    for (let k = 0; k < 2; k++) expect((await grid(['k8s', manifest, '--repo', path.join(vol, 'repo'), '--out', out])).code).toBe(0);
    expect(readYaml(readFileSync(out, 'utf8'))).toHaveLength(3);
  }, 120_000);
});
