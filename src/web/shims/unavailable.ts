// What a Node-only import becomes in the web build: a value that throws, naming the Node API, as
// soon as it is called or read into (the page never takes those paths: files go through
// util/files.ts, stages through a memory store). Importing it is harmless, so shared modules keep
// their Node code paths without a browser fork.

export class NodeOnlyError extends Error {
  override name = 'NodeOnlyError';
}

export function unavailable(what: string): unknown {
  const fail = (): never => {
    throw new NodeOnlyError(`${what} is Node-only and not available in the browser`);
  };
  return new Proxy(function unavailableInBrowser() {}, {
    apply: fail,
    construct: fail,
    get: (_t, prop) => (prop === Symbol.toPrimitive || prop === 'then' || typeof prop === 'symbol' ? undefined : unavailable(`${what}.${String(prop)}`)),
    set: fail,
  });
}
