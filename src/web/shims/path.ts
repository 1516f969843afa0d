// POSIX path operations for the web build (node:path resolves here). The page's files live in an
// in-memory file system rooted at "/", whose working directory is "/".

export const sep = '/';
export const delimiter = ':';

function normalizeParts(p: string, absolute: boolean): string {
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (!part || part === '.') continue;
    if (part === '..') {
      if (out.length && out[out.length - 1] !== '..') out.pop();
      else if (!absolute) out.push('..');
      continue;
    }
    out.push(part);
  }
  return out.join('/');
}

export function isAbsolute(p: string): boolean {
  return p.startsWith('/');
}

export function normalize(p: string): string {
  if (p === '') return '.';
  const abs = isAbsolute(p);
  const body = normalizeParts(p, abs);
  const trailing = p.endsWith('/') && body ? '/' : '';
  return (abs ? '/' : '') + (body || (abs ? '' : '.')) + trailing;
}

export function join(...parts: string[]): string {
  const joined = parts.filter((x) => x !== '').join('/');
  return joined ? normalize(joined) : '.';
}

export function resolve(...parts: string[]): string {
  let acc = '';
  for (let i = parts.length - 1; i >= 0 && !isAbsolute(acc); i--) if (parts[i]) acc = acc ? `${parts[i]}/${acc}` : parts[i];
  if (!isAbsolute(acc)) acc = `/${acc}`;
  return '/' + normalizeParts(acc, true);
}

export function dirname(p: string): string {
  if (!p) return '.';
  const s = p.replace(/\/+$/, '');
  if (!s) return '/';
  const i = s.lastIndexOf('/');
  if (i < 0) return '.';
  if (i === 0) return '/';
  return s.slice(0, i).replace(/\/+$/, '') || '/';
}

export function basename(p: string, ext?: string): string {
  const s = p.replace(/\/+$/, '');
  let b = s.slice(s.lastIndexOf('/') + 1);
  if (ext && b.endsWith(ext) && b !== ext) b = b.slice(0, -ext.length);
  return b;
}

export function extname(p: string): string {
  const b = basename(p);
  const i = b.lastIndexOf('.');
  return i <= 0 || b === '..' ? '' : b.slice(i);
}

export function relative(from: string, to: string): string {
  const a = resolve(from).split('/').filter(Boolean);
  const b = resolve(to).split('/').filter(Boolean);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...a.slice(i).map(() => '..'), ...b.slice(i)].join('/');
}

const posixPath = { sep, delimiter, isAbsolute, normalize, join, resolve, dirname, basename, extname, relative };
export const posix = posixPath;
export default { ...posixPath, posix: posixPath };
