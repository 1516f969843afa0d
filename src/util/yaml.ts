// A YAML writer for plain JSON values (Kubernetes manifests): block mappings and sequences, every
// string double-quoted (JSON escapes are valid YAML), so no value is ever re-typed by a YAML reader
// ("on", "0755", "1e3" stay strings). Documents joined with `---`.

function key(k: string): string {
  return /^[A-Za-z_][A-Za-z0-9_.\/-]*$/.test(k) ? k : JSON.stringify(k);
}

function scalar(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`yaml: ${v} is not a JSON number`);
    return String(v);
  }
  if (typeof v === 'boolean') return String(v);
  throw new Error(`yaml: cannot write ${typeof v}`);
}

const isComposite = (v: unknown) => typeof v === 'object' && v !== null && (Array.isArray(v) ? v.length > 0 : Object.keys(v).length > 0);

function emit(v: unknown, indent: string, out: string[]): void {
  if (Array.isArray(v)) {
    for (const x of v) {
      if (isComposite(x)) {
        const sub: string[] = [];
        emit(x, indent + '  ', sub);
        // The first line of the item goes after "- ".
        out.push(`${indent}- ${sub[0].slice(indent.length + 2)}`, ...sub.slice(1));
      } else out.push(`${indent}- ${Array.isArray(x) ? '[]' : typeof x === 'object' && x !== null ? '{}' : scalar(x)}`);
    }
    return;
  }
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (x === undefined) continue;
    if (isComposite(x)) {
      out.push(`${indent}${key(k)}:`);
      emit(x, Array.isArray(x) ? indent : indent + '  ', out);
    } else out.push(`${indent}${key(k)}: ${Array.isArray(x) ? '[]' : typeof x === 'object' && x !== null ? '{}' : scalar(x)}`);
  }
}

export function toYaml(docs: readonly unknown[]): string {
  return docs
    .map((d) => {
      const out: string[] = [];
      emit(d, '', out);
      return out.join('\n') + '\n';
    })
    .join('---\n');
}
