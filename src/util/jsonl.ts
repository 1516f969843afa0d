// JSON Lines: the one reader and writer of the project's .jsonl files (training data, prompts, the owl
// stages' rows, corpora), read through util/files.ts (Node's files, or the web page's memory ones).
// Blank lines are skipped; a line that is not JSON is one error naming file:line.
import { UserError } from './errors.ts';
import { fsys } from './files.ts';

export interface JsonlLine {
  /** 1-based line number in the file. */
  line: number;
  value: unknown;
}

/** The non-blank lines of a JSONL text, parsed; `file` names the source in errors. */
export function parseJsonl(text: string, file: string): JsonlLine[] {
  const out: JsonlLine[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i].trim();
    if (!l) continue;
    try {
      out.push({ line: i + 1, value: JSON.parse(l) });
    } catch (e) {
      throw new UserError(`${file}:${i + 1}: not valid JSON (${(e as Error).message.split('\n')[0]})`);
    }
  }
  return out;
}

/** The text of a file the user named; a missing or unreadable file is one error line. */
export function readUserText(file: string): string {
  try {
    return fsys().readText(file);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new UserError(`${file}: ${code === 'ENOENT' ? 'file not found' : `cannot read (${code ?? (e as Error).message})`}`);
  }
}

/** Reads and parses a JSONL file; a missing or unreadable file is one error line. */
export function readJsonlFile(file: string): JsonlLine[] {
  return parseJsonl(readUserText(file), file);
}

/** The rows of a JSONL file the project wrote itself (their shape is trusted). */
export function readJsonl<T>(file: string): T[] {
  return readJsonlFile(file).map((l) => l.value as T);
}

/** JSONL text of rows: one JSON line each, newline-terminated (empty for no rows). */
export function jsonlText(rows: readonly unknown[]): string {
  return rows.map((r) => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : '');
}
