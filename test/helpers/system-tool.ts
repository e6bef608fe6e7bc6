import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function onPath(command: string): Promise<boolean> {
  try {
    await run('sh', ['-c', 'command -v "$1"', 'sh', command]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Make sure a system program a test needs is on the PATH: when `command` is
 * missing, install the Debian package `pkg` with apt-get (saying so on
 * stderr), so the suite runs on a fresh machine that has only Node. Throws a
 * message naming what to install when that cannot be done here.
 */
export async function ensureSystemTool(command: string, pkg: string): Promise<void> {
  if (await onPath(command)) return;
  const help = `${command} is not installed: install the Debian package "${pkg}" (apt-get install -y ${pkg}) or put ${command} on the PATH`;
  if (!(await onPath('apt-get'))) throw new Error(`${help}; apt-get is not available here to do it`);
  // apt-get needs root; sudo -n only when it needs no password.
  const asRoot = process.getuid?.() === 0 ? [] : ['sudo', '-n'];
  if (asRoot.length > 0 && !(await onPath('sudo'))) throw new Error(`${help}; not root and no sudo to do it`);
  process.stderr.write(`[test] ${command} is missing: installing the Debian package "${pkg}" with apt-get (once; this can take minutes)\n`);
  const apt = async (...args: string[]) => {
    const [program, ...rest] = [...asRoot, 'apt-get', ...args];
    try {
      await run(program!, rest, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, maxBuffer: 64 * 1024 * 1024 });
    } catch (err) {
      const output = String((err as { stderr?: unknown }).stderr ?? '').trim().split('\n').slice(-5).join('\n');
      throw new Error(`${help}; "apt-get ${args.join(' ')}" failed:\n${output}`);
    }
  };
  await apt('update');
  await apt('install', '-y', pkg);
  if (!(await onPath(command))) throw new Error(`${help}; apt-get installed ${pkg} but ${command} is still not on the PATH`);
  process.stderr.write(`[test] installed ${pkg}\n`);
}
