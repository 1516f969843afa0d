// A worker process on a shared StageStore with fake stages (no GPU): computes the stages named on
// the command line in order, each by sleeping and writing a file, and prints one JSON line per stage
// ({stage, cached, waitedS}) plus `wait`/`reclaim` events, so tests can count who computed what.
//   tsx tests/helpers/stage-worker.ts ROOT DELAY_MS STAGE1,STAGE2,...
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { StageStore } from '../../src/experiment/owl/stages.ts';

const [root, delay, list] = process.argv.slice(2);
const store = new StageStore(root, { staleMs: Number(process.env.STAGE_STALE_MS ?? 600_000) });
const say = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');
store.onWait = (stage, holder) => say({ event: 'wait', stage, holder: holder.pid });
store.onReclaim = (stage, leftover) => say({ event: 'reclaim', stage, leftover });
for (const name of list.split(',')) {
  const r = await store.run(name, { name, v: 1 }, async (dir) => {
    await new Promise((res) => setTimeout(res, Number(delay)));
    writeFileSync(path.join(dir, 'out.txt'), `${name} by ${process.pid}\n`);
    return { by: process.pid };
  });
  say({ event: 'stage', stage: name, cached: r.cached, by: (r.result as { by: number }).by, waitedS: store.timings.at(-1)?.waitedS ?? null });
}
