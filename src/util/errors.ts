/**
 * User-facing errors and a small CLI wrapper.
 *
 * A `UserError` carries a one-line message meant for the person running the tool (bad file, bad
 * flag, unsupported model). CLIs print `error: <message>` and exit non-zero without a stack trace.
 * Anything else is a bug: we print one line plus a hint to rerun with DEBUG=1 for the stack.
 */

export class UserError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UserError';
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/** Format an unknown thrown value as a single line (no stack). */
export function oneLine(e: unknown): string {
  let msg: string;
  if (e instanceof Error) msg = e.message || e.name;
  else msg = String(e);
  return msg.replace(/\s*\n\s*/g, ' ').trim();
}

export interface RunCliIO {
  /** where to write the error line(s); defaults to process.stderr */
  write?: (s: string) => void;
  /** how to exit; defaults to setting process.exitCode (lets pending output flush) */
  exit?: (code: number) => void;
  /** environment for DEBUG lookup; defaults to process.env */
  env?: Record<string, string | undefined>;
}

/**
 * Run a CLI entry point. UserError → `error: <message>`, exit 1. Other errors → `error: <message>`
 * plus a hint (or the full stack when DEBUG=1), exit 2. Resolves after the exit code is set.
 */
export async function runCli(main: () => Promise<void>, io: RunCliIO = {}): Promise<void> {
  const write = io.write ?? ((s: string) => void process.stderr.write(s));
  const exit =
    io.exit ??
    ((code: number) => {
      process.exitCode = code;
    });
  const env = io.env ?? process.env;
  const debug = env.DEBUG !== undefined && env.DEBUG !== '' && env.DEBUG !== '0';
  try {
    await main();
  } catch (e) {
    if (isUserError(e)) {
      write(`error: ${oneLine(e)}\n`);
      if (debug && e.stack) write(`${e.stack}\n`);
      exit(1);
      return;
    }
    write(`error: unexpected failure: ${oneLine(e)}\n`);
    if (debug) {
      write(`${e instanceof Error && e.stack ? e.stack : String(e)}\n`);
    } else {
      write('(this is a bug; set DEBUG=1 to print the stack trace)\n');
    }
    exit(2);
  }
}
