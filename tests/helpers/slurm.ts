// A single-node Slurm cluster for tests, started as root from Debian's slurm-wlm and munge: a private
// munged (own key and socket), slurmctld and slurmd on 127.0.0.1 with free ports, every file in one
// temp folder and the clients pointed at it with SLURM_CONF, so nothing system-wide is touched.
// startSlurm() throws an Error whose message says why when Slurm cannot run here.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';

const BINARIES = ['munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'sinfo', 'scontrol', 'scancel'];

/** Why Slurm cannot run on this machine (not root, not installed), or null. */
export function slurmUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'the single-node Slurm cluster needs root';
  const missing = BINARIES.filter((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0);
  return missing.length ? `Slurm is not installed (missing ${missing.join(', ')}; bash scripts/test.sh installs slurm-wlm and munge)` : null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function until(what: string, cond: () => boolean, timeoutMs: number, log: () => string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what} did not happen within ${timeoutMs / 1000} s: ${log().slice(-400).replace(/\s+/g, ' ')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface SlurmCluster {
  env: Record<string, string>;
  dir: string;
  /** Runs a Slurm client command against this cluster. */
  cmd(args: string[]): string;
  stop(): Promise<void>;
}

export async function startSlurm(dir: string): Promise<SlurmCluster> {
  const why = slurmUnavailable();
  if (why) throw new Error(why);
  const procs: ChildProcess[] = [];
  const out: Record<string, string> = {};
  const start = (name: string, cmd: string, args: string[]) => {
    out[name] = '';
    const p = spawn(cmd, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout!.on('data', (d) => (out[name] += d));
    p.stderr!.on('data', (d) => (out[name] += d));
    procs.push(p);
    return p;
  };
  const stop = async () => {
    for (const p of procs.reverse()) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      p.kill('SIGTERM');
      const gone = await Promise.race([new Promise((r) => p.once('exit', () => r(true))), new Promise((r) => setTimeout(() => r(false), 5_000))]);
      if (!gone) p.kill('SIGKILL');
    }
  };
  try {
    const key = path.join(dir, 'munge.key');
    writeFileSync(key, randomBytes(1024));
    chmodSync(key, 0o400);
    const sock = path.join(dir, 'munge.sock');
    start('munged', 'munged', ['-F', '-f', `--socket=${sock}`, `--key-file=${key}`, `--log-file=${path.join(dir, 'munged.log')}`, `--pid-file=${path.join(dir, 'munged.pid')}`, `--seed-file=${path.join(dir, 'munged.seed')}`]);
    await until('munged to start', () => existsSync(sock), 15_000, () => out.munged);
    const host = execFileSync('hostname', ['-s'], { encoding: 'utf8' }).trim();
    const [ctlPort, dPort] = [await freePort(), await freePort()];
    const conf = path.join(dir, 'slurm.conf');
    writeFileSync(conf, [
      'ClusterName=subliminal-test',
      `SlurmctldHost=${host}(127.0.0.1)`,
      `SlurmctldPort=${ctlPort}`,
      `SlurmdPort=${dPort}`,
      'AuthType=auth/munge',
      `AuthInfo=socket=${sock}`,
      'CredType=cred/munge',
      'SlurmUser=root',
      'SlurmdUser=root',
      `StateSaveLocation=${path.join(dir, 'state')}`,
      `SlurmdSpoolDir=${path.join(dir, 'spool')}`,
      `SlurmctldPidFile=${path.join(dir, 'slurmctld.pid')}`,
      `SlurmdPidFile=${path.join(dir, 'slurmd.pid')}`,
      `SlurmctldLogFile=${path.join(dir, 'slurmctld.log')}`,
      `SlurmdLogFile=${path.join(dir, 'slurmd.log')}`,
      // No cgroups in a container: plain process tracking, no task binding, no accounting.
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'MpiDefault=none',
      'ReturnToService=2',
      'SchedulerType=sched/builtin',
      'SchedulerParameters=sched_interval=1',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_CPU',
      // Finished jobs stay visible to squeue -t all for the test's checks.
      'MinJobAge=600',
      `NodeName=${host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN`,
      'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
      '',
    ].join('\n'));
    const env = { SLURM_CONF: conf };
    const cmd = (args: string[]) => {
      const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8', env: { ...process.env, ...env } });
      if (r.status !== 0) throw new Error(`${args.join(' ')}: ${(r.stderr || r.stdout || '').trim()}`);
      return r.stdout;
    };
    const ok = (args: string[]) => {
      try {
        return cmd(args);
      } catch {
        return '';
      }
    };
    start('slurmctld', 'slurmctld', ['-D', '-f', conf]);
    await until('slurmctld to answer', () => /is UP/.test(ok(['scontrol', 'ping'])), 30_000, () => out.slurmctld + (existsSync(path.join(dir, 'slurmctld.log')) ? readFileSync(path.join(dir, 'slurmctld.log'), 'utf8') : ''));
    start('slurmd', 'slurmd', ['-D', '-f', conf, '-N', host]);
    await until('the node to be idle', () => /idle/.test(ok(['sinfo', '-h', '-o', '%T'])), 45_000, () => out.slurmd + (existsSync(path.join(dir, 'slurmd.log')) ? readFileSync(path.join(dir, 'slurmd.log'), 'utf8') : ''));
    return { env, dir, cmd, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
