import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { parseConfigText } from '../../src/load.js';
import { createTestCa, issueServerCertificate } from '../helpers/test-ca.js';
import { CLI, childScript, REPO_ROOT } from './paths.js';
import { childPids, jsonLine, sleep, spawnChild, stopChild, waitForLine, type Child } from './proc.js';
import type { TargetInfo } from './scenarios.js';
import { buildConfig, NEW_HOSTS, PATHS, PRODUCT_NODE_FLAGS, TUNNEL_HOST, type InterceptionContext, type ProxySetting } from './settings.js';

/** Where children run: CPU pinning and scratch space. */
export interface Placement {
  taskset: string | null;
  /** The CPU for upstream and proxies (null: not pinned). */
  serverCpu: number | null;
  tmpDir: string;
}

/** A running benchmark target. */
export interface Target extends TargetInfo {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** The processes whose memory counts as this target's (the proxy; nginx's worker; the upstream for direct). */
  memoryPids(): number[];
  /** What this target runs with, for the report. */
  readonly detail: string;
  /** How the undici client reaches it, where not `${url}${path}` over plain HTTP. */
  readonly client?: NodeClient;
  stop(): Promise<void>;
}

export interface NodeClient {
  /** The URL for a scenario path. */
  url(path: string): string;
  /** A forward proxy to tunnel through (CONNECT). */
  proxy?: string;
  /** The CA to trust (PEM file). */
  caFile: string;
}

/**
 * Certificates for the intercepted-HTTPS comparison, as PEM files: an
 * operator CA the forward proxy mints from, and a storage CA whose server
 * certificate (every bucket host name, and 127.0.0.1 for nginx's listener)
 * the TLS upstream and nginx-tls present.
 */
export interface BenchPki {
  operatorCertFile: string;
  operatorKeyFile: string;
  storageCaFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  /** The names the server certificate covers and the bench DNS server answers. */
  names: string[];
}

export async function writeBenchPki(tmpDir: string): Promise<BenchPki> {
  const dir = join(tmpDir, 'pki');
  mkdirSync(dir, { recursive: true });
  const file = (name: string, pem: string) => {
    writeFileSync(join(dir, name), pem, { mode: 0o600 });
    return join(dir, name);
  };
  const operator = await createTestCa({ subject: 'CN=residency-proxy bench operator CA' });
  const storage = await createTestCa({ subject: 'CN=residency-proxy bench storage CA' });
  const names = [TUNNEL_HOST, ...NEW_HOSTS];
  const server = await issueServerCertificate(storage, [...names, '127.0.0.1']);
  return {
    operatorCertFile: file('operator-ca.pem', operator.certPem),
    operatorKeyFile: file('operator-ca.key', operator.keyPem),
    storageCaFile: file('storage-ca.pem', storage.certPem),
    serverCertFile: file('server.pem', server.certPem),
    serverKeyFile: file('server.key', server.keyPem),
    names,
  };
}

const READY_MS = 20_000;

/** A child env without the overrides the proxy reads (PORT, LOG_LEVEL…) or preloads from the parent. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of ['PORT', 'ADMIN_PORT', 'LOG_LEVEL', 'RESIDENCY_CONFIG', 'NODE_OPTIONS']) delete env[key];
  return env;
}

const listeningPort = (line: string): number | undefined => {
  const msg = jsonLine(line);
  return msg?.msg === 'listening' && typeof msg.port === 'number' ? msg.port : undefined;
};

export interface Upstream {
  url: string;
  port: number;
  child: Child;
  /** TLS upstream only: 'ip:port' of its DNS server. */
  dns?: string;
}

/** The upstream child; with `pki`, its HTTPS variant and DNS server for the bucket host names. */
export async function startUpstream(place: Placement, pki?: BenchPki): Promise<Upstream> {
  const child = spawnChild({
    name: pki ? 'tls-upstream' : 'upstream',
    command: process.execPath,
    args: [childScript('upstream-child'), ...(pki ? [JSON.stringify({ certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, names: pki.names })] : [])],
    cpu: place.serverCpu,
    taskset: place.taskset,
    env: cleanEnv(),
  });
  const ready = await waitForLine(child, (line) => {
    const msg = jsonLine(line);
    return msg?.msg === 'listening' && typeof msg.port === 'number' ? { port: msg.port, dns: msg.dns } : undefined;
  }, READY_MS);
  const port = ready.port;
  return { url: `${pki ? 'https' : 'http'}://127.0.0.1:${port}`, port, child, ...(typeof ready.dns === 'string' ? { dns: ready.dns } : {}) };
}

/** "direct": requests go straight to the upstream (the limit any proxy is measured against). */
export function directTarget(upstream: Upstream): Target {
  return {
    name: 'direct',
    kind: 'direct',
    url: upstream.url,
    detail: 'node:http upstream, no proxy',
    memoryPids: () => [upstream.child.pid],
    stop: async () => {},
  };
}

export async function startBare(upstream: Upstream, place: Placement): Promise<Target> {
  const child = spawnChild({
    name: 'bare @fastify/http-proxy',
    command: process.execPath,
    args: [childScript('bare-proxy-child'), upstream.url],
    cpu: place.serverCpu,
    taskset: place.taskset,
    env: cleanEnv(),
  });
  const port = await waitForLine(child, listeningPort, READY_MS);
  return {
    name: 'bare',
    kind: 'bare',
    url: `http://127.0.0.1:${port}`,
    detail: 'Fastify 5 + @fastify/http-proxy defaults, no policy',
    memoryPids: () => [child.pid],
    stop: async () => {
      await stopChild(child);
    },
  };
}

/** A port the OS calls free right now (nginx needs a number; a retry covers the race). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export function nginxVersion(binary: string): string {
  // nginx -v prints to stderr.
  const r = spawnSync(binary, ['-v'], { encoding: 'utf8', timeout: 5_000 });
  return `${r.stderr ?? ''}${r.stdout ?? ''}`.trim() || 'nginx (version unknown)';
}

/** nginx-tls: TLS from the client (the storage certificate), TLS to the upstream, verified against the storage CA. */
function nginxTls(pki: BenchPki): { listen: string; server: string; location: string } {
  return {
    listen: ' ssl',
    server: `
    ssl_certificate ${pki.serverCertFile};
    ssl_certificate_key ${pki.serverKeyFile};
    ssl_protocols TLSv1.2 TLSv1.3;`,
    location: `
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate ${pki.storageCaFile};
      proxy_ssl_name ${TUNNEL_HOST};
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;`,
  };
}

function nginxConf(dir: string, port: number, upstreamPort: number, pki: BenchPki | null): string {
  const tls = pki ? nginxTls(pki) : { listen: '', server: '', location: '' };
  const asRoot = process.getuid?.() === 0;
  return `# Generated by the residency-proxy benchmark: loopback only, one worker, all files in this run's scratch folder.
${asRoot ? '# Workers stay root: the scratch folder is private (0700) to this run.\nuser root;\n' : ''}worker_processes 1;
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${join(dir, 'client_body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  keepalive_requests 1000000;
  keepalive_timeout 65s;
  upstream bench_upstream {
    server 127.0.0.1:${upstreamPort};
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port}${tls.listen};
    client_max_body_size 0;${tls.server}
    location / {
      proxy_pass ${pki ? 'https' : 'http'}://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;${tls.location}
    }
  }
}
`;
}

/**
 * nginx proxy_pass with upstream keep-alive and unbuffered uploads, on a free loopback port.
 * With `pki` (nginx-tls): terminating TLS and proxying to the TLS upstream over TLS.
 */
export async function startNginx(binary: string, upstream: Upstream, place: Placement, pki: BenchPki | null = null): Promise<Target> {
  const name = pki ? 'nginx-tls' : 'nginx';
  const dir = join(place.tmpDir, name);
  mkdirSync(join(dir, 'logs'), { recursive: true });
  let lastError = '';
  // A port picked free can be taken before nginx binds it: a few tries.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, nginxConf(dir, port, upstream.port, pki));
    const child = spawnChild({
      name,
      command: binary,
      args: ['-p', dir, '-c', conf, '-e', join(dir, 'error.log'), '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`],
      cpu: place.serverCpu,
      taskset: place.taskset,
      env: cleanEnv(),
    });
    const deadline = Date.now() + 10_000;
    let up = false;
    while (Date.now() < deadline && child.proc.exitCode === null) {
      if (await accepting(port)) {
        up = true;
        break;
      }
      await sleep(50);
    }
    if (up) {
      const url = `${pki ? 'https' : 'http'}://127.0.0.1:${port}`;
      return {
        name,
        kind: pki ? 'nginx-tls' : 'nginx',
        url,
        detail: `proxy_pass, upstream keepalive 64, HTTP/1.1, proxy_request_buffering off, 1 worker${pki ? '; TLS from the client (listen ssl) and to the TLS upstream (proxy_pass https, proxy_ssl_verify with the storage CA, session reuse), TLS 1.2–1.3' : ''}`,
        ...(pki ? { client: { url: (path: string) => `${url}${path}`, caFile: pki.storageCaFile } } : {}),
        memoryPids: () => {
          const workers = childPids(child.pid);
          return workers.length > 0 ? workers : [child.pid];
        },
        stop: async () => {
          // SIGTERM to the master (by PID) stops its workers; SIGKILL of the master would orphan them.
          const workers = childPids(child.pid);
          await stopChild(child, 5_000);
          for (const pid of workers) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // Exited with the master.
            }
          }
        },
      };
    }
    lastError = child.tail();
    await stopChild(child, 2_000);
  }
  throw new Error(`${name} did not start:\n${lastError}`);
}

export interface ResidencyStart {
  /** Extra node flags (e.g. --cpu-prof). */
  nodeArgs?: readonly string[];
  /** Name suffix, so a profiling run does not collide with the measured one. */
  label?: string;
  /** The intercepted-HTTPS setting: its certificates (the upstream is then the TLS upstream, with its DNS server). */
  pki?: BenchPki;
  /** Another checkout's build (`npm run bench:ab`'s baseline) instead of this one. */
  build?: OtherBuild;
}

/**
 * A built checkout of another revision: its CLI, and its own benchmark
 * settings (its config schema may lack keys this one has, or have others),
 * with the node flags it ships with.
 */
export interface OtherBuild {
  root: string;
  buildConfig: typeof buildConfig;
  nodeFlags: readonly string[];
}

/** The allowed bucket's path as the intercepted client names it: `/us/bench-bucket/KEY` → https://bench-bucket.s3.us-east-1.amazonaws.com:PORT/KEY. */
function tunnelUrl(path: string, port: number): string {
  if (!path.startsWith(`${PATHS.allowed}/`)) throw new Error(`intercept-https serves the allowed bucket only, not ${path}`);
  return `https://${TUNNEL_HOST}:${port}${path.slice(PATHS.allowed.length)}`;
}

/** residency-proxy from the built CLI (`node dist/cli/main.js serve --config FILE`) in one setting. */
export async function startResidency(setting: ProxySetting, upstream: Upstream, place: Placement, start: ResidencyStart = {}): Promise<Target & { applied: string[]; skipped: string[] }> {
  const name = start.label ? `${setting.name}-${start.label}` : setting.name;
  const dir = join(place.tmpDir, `rp-${name}`);
  mkdirSync(dir, { recursive: true });
  const interception: InterceptionContext | undefined = start.pki && {
    operatorCertFile: start.pki.operatorCertFile,
    operatorKeyFile: start.pki.operatorKeyFile,
    storageCaFile: start.pki.storageCaFile,
    dnsServer: upstream.dns ?? '',
  };
  const other = start.build;
  const built = (other?.buildConfig ?? buildConfig)(setting, { upstreamUrl: upstream.url, dir, ...(interception ? { interception } : {}) });
  const file = join(dir, 'residency.yaml');
  const text = stringify(built.doc);
  // Fail here, with the problems listed, rather than as a child that exits (another build checks its own config).
  if (other === undefined) parseConfigText(text, file, built.env);
  writeFileSync(file, text);
  for (const [rel, doc] of Object.entries(built.files)) writeFileSync(join(dir, rel), stringify(doc));

  // Decision records on stdout are discarded at the OS level, not read by the harness (which shares the load CPU).
  const devNull = built.stdoutLog ? openSync('/dev/null', 'w') : null;
  const child = spawnChild({
    name: `residency-proxy ${name}`,
    command: process.execPath,
    // As npm start and the container image run it.
    args: [...(other?.nodeFlags ?? PRODUCT_NODE_FLAGS), ...(start.nodeArgs ?? []), other ? join(other.root, 'dist', 'cli', 'main.js') : CLI, 'serve', '--config', file],
    cpu: place.serverCpu,
    taskset: place.taskset,
    env: { ...cleanEnv(), ...built.env },
    cwd: other?.root ?? REPO_ROOT,
    stdout: devNull ?? 'pipe',
  });
  if (devNull !== null) closeSync(devNull);
  const port = await waitForLine(
    child,
    (line) => {
      const msg = jsonLine(line);
      if (msg?.msg !== 'residency-proxy listening' || typeof msg.proxy !== 'string') return undefined;
      return Number(msg.proxy.slice(msg.proxy.lastIndexOf(':') + 1));
    },
    READY_MS,
  );
  const url = `http://127.0.0.1:${port}`;
  const pki = start.pki;
  return {
    name,
    kind: pki ? 'intercept' : 'residency',
    enforce: setting.enforce,
    url,
    ...(pki ? { client: { url: (path: string) => tunnelUrl(path, upstream.port), proxy: url, caFile: pki.operatorCertFile } } : {}),
    detail: `${setting.summary} [features: ${built.applied.join(', ')}${built.skipped.length ? `; skipped: ${built.skipped.join(', ')}` : ''}]`,
    applied: built.applied,
    skipped: built.skipped,
    // With `workers`, the primary's forked workers count too.
    memoryPids: () => [child.pid, ...childPids(child.pid)],
    stop: async () => {
      // SIGTERM drains and seals the decision log; a CPU profile is written on this exit.
      await stopChild(child, 15_000);
    },
  };
}
