// The structure of the Kubernetes objects scripts/grid.ts writes, after the API's OpenAPI schema
// (batch/v1 Job, core/v1 PersistentVolumeClaim and the PodSpec parts they use): for every object the
// complete list of its fields (an unknown or misspelt field is an error, as `kubectl apply
// --validate=strict` reports it), the required ones, value types and enums, plus the Job rules the API
// server checks (Indexed jobs need completions; backoffLimitPerIndex needs Indexed; a Job's pods
// restart Never or OnFailure; names are DNS-1123). No cluster runs here, so this stands in for one.
type S =
  | { t: 'string'; enum?: string[]; re?: RegExp }
  | { t: 'int'; min?: number }
  | { t: 'bool' }
  | { t: 'quantity' }
  | { t: 'map'; of: S }
  | { t: 'list'; of: S }
  | { t: 'obj'; fields: Record<string, S | 'any'>; required?: string[] };

const str = (o: Omit<Extract<S, { t: 'string' }>, 't'> = {}): S => ({ t: 'string', ...o });
const int = (min = 0): S => ({ t: 'int', min });
const obj = (fields: Record<string, S | 'any'>, required: string[] = []): S => ({ t: 'obj', fields, required });
const DNS1123 = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const LABEL = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

const objectMeta = obj({
  annotations: { t: 'map', of: str() }, creationTimestamp: 'any', deletionGracePeriodSeconds: int(), deletionTimestamp: 'any', finalizers: { t: 'list', of: str() },
  generateName: str(), generation: int(), labels: { t: 'map', of: str({ re: LABEL }) }, managedFields: 'any', name: str({ re: DNS1123 }), namespace: str({ re: DNS1123 }),
  ownerReferences: 'any', resourceVersion: str(), selfLink: str(), uid: str(),
});
const resources = obj({ claims: 'any', limits: { t: 'map', of: { t: 'quantity' } }, requests: { t: 'map', of: { t: 'quantity' } } });
const container = obj({
  args: { t: 'list', of: str() }, command: { t: 'list', of: str() },
  env: { t: 'list', of: obj({ name: str({ re: /^[-._a-zA-Z][-._a-zA-Z0-9]*$/ }), value: str(), valueFrom: 'any' }, ['name']) },
  envFrom: 'any', image: str(), imagePullPolicy: str({ enum: ['Always', 'Never', 'IfNotPresent'] }), lifecycle: 'any', livenessProbe: 'any', name: str({ re: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/ }),
  ports: 'any', readinessProbe: 'any', resizePolicy: 'any', resources, restartPolicy: str(), securityContext: 'any', startupProbe: 'any', stdin: { t: 'bool' }, stdinOnce: { t: 'bool' },
  terminationMessagePath: str(), terminationMessagePolicy: str({ enum: ['File', 'FallbackToLogsOnError'] }), tty: { t: 'bool' }, volumeDevices: 'any',
  volumeMounts: { t: 'list', of: obj({ mountPath: str({ re: /^\// }), mountPropagation: str(), name: str(), readOnly: { t: 'bool' }, recursiveReadOnly: str(), subPath: str(), subPathExpr: str() }, ['mountPath', 'name']) },
  workingDir: str(),
}, ['name']);
const VOLUME_SOURCES = ['awsElasticBlockStore', 'azureDisk', 'azureFile', 'cephfs', 'cinder', 'configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'fc', 'flexVolume', 'flocker', 'gcePersistentDisk', 'gitRepo', 'glusterfs', 'hostPath', 'image', 'iscsi', 'nfs', 'photonPersistentDisk', 'portworxVolume', 'projected', 'quobyte', 'rbd', 'scaleIO', 'secret', 'storageos', 'vsphereVolume'];
const volume = obj({ name: str({ re: DNS1123 }), persistentVolumeClaim: obj({ claimName: str({ re: DNS1123 }), readOnly: { t: 'bool' } }, ['claimName']), ...Object.fromEntries(VOLUME_SOURCES.map((k) => [k, 'any' as const])) }, ['name']);
const podSpec = obj({
  activeDeadlineSeconds: int(1), affinity: 'any', automountServiceAccountToken: { t: 'bool' }, containers: { t: 'list', of: container }, dnsConfig: 'any', dnsPolicy: str(), enableServiceLinks: { t: 'bool' },
  ephemeralContainers: 'any', hostAliases: 'any', hostIPC: { t: 'bool' }, hostNetwork: { t: 'bool' }, hostPID: { t: 'bool' }, hostUsers: { t: 'bool' }, hostname: str(), imagePullSecrets: 'any',
  initContainers: { t: 'list', of: container }, nodeName: str(), nodeSelector: { t: 'map', of: str() }, os: 'any', overhead: 'any', preemptionPolicy: str(), priority: int(), priorityClassName: str(),
  readinessGates: 'any', resourceClaims: 'any', resources, restartPolicy: str({ enum: ['Always', 'OnFailure', 'Never'] }), runtimeClassName: str(), schedulerName: str(), schedulingGates: 'any',
  securityContext: 'any', serviceAccount: str(), serviceAccountName: str(), setHostnameAsFQDN: { t: 'bool' }, shareProcessNamespace: { t: 'bool' }, subdomain: str(),
  terminationGracePeriodSeconds: int(), tolerations: 'any', topologySpreadConstraints: 'any', volumes: { t: 'list', of: volume },
}, ['containers']);
const jobSpec = obj({
  activeDeadlineSeconds: int(1), backoffLimit: int(), backoffLimitPerIndex: int(), completionMode: str({ enum: ['NonIndexed', 'Indexed'] }), completions: int(), managedBy: str(), manualSelector: { t: 'bool' },
  maxFailedIndexes: int(), parallelism: int(), podFailurePolicy: 'any', podReplacementPolicy: str({ enum: ['TerminatingOrFailed', 'Failed'] }), selector: 'any', successPolicy: 'any', suspend: { t: 'bool' },
  template: obj({ metadata: objectMeta, spec: podSpec }, ['spec']), ttlSecondsAfterFinished: int(),
}, ['template']);
export const SCHEMAS: Record<string, S> = {
  'batch/v1 Job': obj({ apiVersion: str({ enum: ['batch/v1'] }), kind: str({ enum: ['Job'] }), metadata: objectMeta, spec: jobSpec, status: 'any' }, ['apiVersion', 'kind', 'metadata', 'spec']),
  'v1 PersistentVolumeClaim': obj({
    apiVersion: str({ enum: ['v1'] }), kind: str({ enum: ['PersistentVolumeClaim'] }), metadata: objectMeta, status: 'any',
    spec: obj({ accessModes: { t: 'list', of: str({ enum: ['ReadWriteOnce', 'ReadOnlyMany', 'ReadWriteMany', 'ReadWriteOncePod'] }) }, dataSource: 'any', dataSourceRef: 'any', resources, selector: 'any', storageClassName: str(), volumeAttributesClassName: str(), volumeMode: str({ enum: ['Filesystem', 'Block'] }), volumeName: str() }),
  }, ['apiVersion', 'kind', 'metadata', 'spec']),
};

function check(v: unknown, s: S | 'any', at: string, errs: string[]): void {
  if (s === 'any') return;
  const type = Array.isArray(v) ? 'list' : v === null ? 'null' : typeof v;
  switch (s.t) {
    case 'string':
      if (typeof v !== 'string') return void errs.push(`${at}: expected a string, got ${type}`);
      if (s.enum && !s.enum.includes(v)) errs.push(`${at}: '${v}' is not one of ${s.enum.join(', ')}`);
      if (s.re && !s.re.test(v)) errs.push(`${at}: '${v}' does not match ${s.re}`);
      return;
    case 'int':
      if (!Number.isSafeInteger(v)) return void errs.push(`${at}: expected an integer, got ${JSON.stringify(v)}`);
      if (s.min !== undefined && (v as number) < s.min) errs.push(`${at}: ${v} < ${s.min}`);
      return;
    case 'bool':
      if (typeof v !== 'boolean') errs.push(`${at}: expected a boolean`);
      return;
    case 'quantity':
      if (!(Number.isFinite(v) || (typeof v === 'string' && /^[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i?|[mkMGTPE]|[eE][+-]?\d+)?$/.test(v)))) errs.push(`${at}: ${JSON.stringify(v)} is not a quantity`);
      return;
    case 'map':
      if (type !== 'object') return void errs.push(`${at}: expected a map`);
      for (const [k, x] of Object.entries(v as object)) check(x, s.of, `${at}.${k}`, errs);
      return;
    case 'list':
      if (!Array.isArray(v)) return void errs.push(`${at}: expected a list`);
      v.forEach((x, i) => check(x, s.of, `${at}[${i}]`, errs));
      return;
    case 'obj': {
      if (type !== 'object') return void errs.push(`${at}: expected an object, got ${type}`);
      const o = v as Record<string, unknown>;
      for (const k of Object.keys(o)) if (!(k in s.fields)) errs.push(`${at}: unknown field '${k}'`);
      for (const k of s.required ?? []) if (o[k] === undefined) errs.push(`${at}: missing required field '${k}'`);
      for (const [k, x] of Object.entries(o)) if (k in s.fields) check(x, s.fields[k], `${at}.${k}`, errs);
    }
  }
}

/** Every structural problem of a Kubernetes object (empty when it is a valid Job or claim). */
export function validateK8s(o: Record<string, unknown>): string[] {
  const which = `${o.apiVersion} ${o.kind}`;
  const s = SCHEMAS[which];
  if (!s) return [`no schema for ${which}`];
  const errs: string[] = [];
  check(o, s, which, errs);
  if (o.kind === 'Job') {
    const spec = o.spec as Record<string, any>;
    const name = (o.metadata as Record<string, unknown>)?.name;
    if (typeof name === 'string' && name.length > 63) errs.push(`Job name ${name} is longer than 63 characters`);
    if (spec.completionMode === 'Indexed' && !(spec.completions > 0)) errs.push('an Indexed Job needs completions');
    if (spec.backoffLimitPerIndex !== undefined && spec.completionMode !== 'Indexed') errs.push('backoffLimitPerIndex needs completionMode Indexed');
    if (spec.parallelism !== undefined && spec.completions !== undefined && spec.parallelism > spec.completions) errs.push('parallelism above completions');
    const rp = spec.template?.spec?.restartPolicy;
    if (rp !== 'Never' && rp !== 'OnFailure') errs.push(`a Job's pods must restart Never or OnFailure, not ${rp}`);
    const vols = new Set((spec.template?.spec?.volumes ?? []).map((x: { name: string }) => x.name));
    for (const c of spec.template?.spec?.containers ?? []) for (const m of c.volumeMounts ?? []) if (!vols.has(m.name)) errs.push(`container ${c.name} mounts unknown volume ${m.name}`);
  }
  return errs;
}

/** Reads the block YAML src/util/yaml.ts writes (maps, sequences, JSON scalars), documents split at `---`. */
export function readYaml(text: string): unknown[] {
  const docs = text.split(/^---$/m);
  return docs
    .map((d) => d.split('\n').filter((l) => l.trim() && !l.trimStart().startsWith('#')))
    .filter((lines) => lines.length)
    .map((lines) => {
      let i = 0;
      const indentOf = (l: string) => l.length - l.trimStart().length;
      const scalar = (s: string): unknown => (s === '[]' ? [] : s === '{}' ? {} : JSON.parse(s));
      const block = (indent: number): unknown => {
        if (lines[i].trimStart().startsWith('- ') && indentOf(lines[i]) === indent) {
          const out: unknown[] = [];
          while (i < lines.length && indentOf(lines[i]) === indent && lines[i].trimStart().startsWith('- ')) {
            const rest = lines[i].slice(indent + 2);
            if (/^("[^"]*"|[A-Za-z_][\w.\/-]*):( |$)/.test(rest)) {
              lines[i] = ' '.repeat(indent + 2) + rest; // the item is a map starting on this line
              out.push(block(indent + 2));
            } else {
              out.push(scalar(rest));
              i++;
            }
          }
          return out;
        }
        const out: Record<string, unknown> = {};
        while (i < lines.length && indentOf(lines[i]) === indent && !lines[i].trimStart().startsWith('- ')) {
          const m = /^("(?:[^"\\]|\\.)*"|[^:]+):(?: (.*))?$/.exec(lines[i].trimStart());
          if (!m) throw new Error(`yaml: cannot read line: ${lines[i]}`);
          const k = m[1].startsWith('"') ? (JSON.parse(m[1]) as string) : m[1];
          i++;
          if (m[2] !== undefined) out[k] = scalar(m[2]);
          else out[k] = block(indentOf(lines[i]));
        }
        return out;
      };
      return block(0);
    });
}
