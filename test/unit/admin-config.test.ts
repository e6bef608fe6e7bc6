import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { bearerToken, digestToken, tokenAccepted } from '../../src/admin/auth.js';
import { isLoopbackHost, loadAdminSecurity } from '../../src/admin/config.js';
import { ConfigError } from '../../src/config/load.js';
import { parseConfigText } from '../../src/load.js';
import { problemsOf } from '../helpers/config-problems.js';

const TOKEN = 'a3f1c0ffee5e1f1e2d3c4b5a69788796';
const dir = mkdtempSync(join(tmpdir(), 'residency-admin-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(admin: Record<string, unknown>) {
  return parseConfigText(
    stringify({ admin, upstreams: [{ name: 'us', url: 'http://127.0.0.1:1', route: { path_prefix: '/us' }, region: 'us-east-1' }] }),
    'test.yaml',
  );
}

/** The check-config lines a config produces, or [] when valid. */
const problems = (admin: Record<string, unknown>) => problemsOf(() => config(admin));

function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

describe('isLoopbackHost', () => {
  it.each(['127.0.0.1', '127.1.2.3', 'localhost', 'LOCALHOST', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'])('%s is loopback', (host) => {
    expect(isLoopbackHost(host)).toBe(true);
  });
  it.each(['0.0.0.0', '::', '10.0.0.5', '192.168.1.1', 'admin.internal', '::2', 'fe80::1', '128.0.0.1', ''])('%s is not', (host) => {
    expect(isLoopbackHost(host)).toBe(false);
  });
});

describe('admin config checks', () => {
  it('defaults to a loopback bind without a token', () => {
    expect(config({}).admin).toEqual({ host: '127.0.0.1' });
    expect(problems({ host: '127.0.0.1' })).toEqual([]);
  });

  it('refuses a non-loopback bind without a token source, in check-config form', () => {
    expect(problems({ host: '0.0.0.0' })).toEqual([
      'test.yaml: admin.host: binding 0.0.0.0 requires admin.token_file or admin.token_env (expected a token source)',
    ]);
    // A scrape token alone does not protect /readyz and /policy.
    expect(problems({ host: '10.0.0.5', metrics_token_env: 'SCRAPE' })).toEqual([
      'test.yaml: admin.host: binding 10.0.0.5 requires admin.token_file or admin.token_env (expected a token source)',
    ]);
  });

  it('accepts a non-loopback bind with a token source', () => {
    expect(problems({ host: '0.0.0.0', token_file: '/run/secrets/admin' })).toEqual([]);
    expect(problems({ host: '::', token_env: 'RESIDENCY_ADMIN_TOKEN', metrics_token_file: '/run/secrets/scrape' })).toEqual([]);
  });

  it('refuses a token written into the file, without echoing it', () => {
    const lines = problems({ host: '127.0.0.1', token: 'hunter2-hunter2-hunter2' });
    expect(lines).toContain(
      'test.yaml: admin.token: a token must not be written in the config file (expected admin.token_file or admin.token_env (the name of an environment variable))',
    );
    expect(lines.join('\n')).not.toContain('hunter2');
  });

  it('refuses a token pasted into token_env, without echoing it', () => {
    const lines = problems({ token_env: 'abc/def+ghi=' });
    expect(lines).toEqual([
      'test.yaml: admin.token_env: is not an environment variable name (it names the variable that holds the token, never the token) (expected a name such as RESIDENCY_ADMIN_TOKEN)',
    ]);
  });

  it('refuses two sources for one token', () => {
    expect(problems({ token_file: '/a', token_env: 'A', metrics_token_file: '/b', metrics_token_env: 'B' })).toEqual([
      'test.yaml: admin.token_env: is set together with admin.token_file (expected one token source)',
      'test.yaml: admin.metrics_token_env: is set together with admin.metrics_token_file (expected one token source)',
    ]);
  });

  it('requires both halves of tls', () => {
    expect(problems({ tls: { cert_file: '/c' } })).toEqual(['test.yaml: admin.tls.key_file: is required but missing']);
  });

  it('does not read secrets at check time (check-config runs where they are not mounted)', () => {
    expect(problems({ host: '0.0.0.0', token_file: join(dir, 'not-there') })).toEqual([]);
  });
});

describe('loadAdminSecurity', () => {
  it('reads a token file, trimming the trailing newline, and keeps only the digest', () => {
    const security = loadAdminSecurity(config({ token_file: file('t1', `${TOKEN}\n`) }), {});
    expect(security.token).toEqual(digestToken(TOKEN));
    expect(security.metricsToken).toBeNull();
    expect(security.tls).toBeNull();
  });

  it('reads tokens from the environment variables named', () => {
    const security = loadAdminSecurity(config({ token_env: 'ADMIN_T', metrics_token_env: 'SCRAPE_T' }), {
      ADMIN_T: TOKEN,
      SCRAPE_T: `${TOKEN}-scrape`,
    });
    expect(security.token).toEqual(digestToken(TOKEN));
    expect(security.metricsToken).toEqual(digestToken(`${TOKEN}-scrape`));
  });

  it('has no tokens when none are configured', () => {
    expect(loadAdminSecurity(config({}), {})).toEqual({ token: null, metricsToken: null, tls: null });
  });

  it('refuses to start on a missing, empty, short or malformed secret, naming where it was configured and never the value', () => {
    const cases: [Record<string, unknown>, NodeJS.ProcessEnv, string][] = [
      [{ token_file: join(dir, 'missing') }, {}, `admin.token_file: cannot read "${join(dir, 'missing')}": file not found (expected a readable file)`],
      [{ token_env: 'NOPE' }, {}, 'admin.token_env: environment variable NOPE is not set (expected the token in that variable)'],
      [{ token_file: file('empty', '\n') }, {}, 'admin.token_file: the token is empty (expected a random token of at least 16 characters)'],
      [{ token_env: 'SHORT' }, { SHORT: 'secret-7' }, 'admin.token_env: the token is shorter than 16 characters'],
      [{ metrics_token_env: 'SPACEY' }, { SPACEY: 'has a space in the middle!' }, 'admin.metrics_token_env: the token has spaces or non-ASCII characters'],
    ];
    for (const [admin, env, expected] of cases) {
      let message = '';
      try {
        loadAdminSecurity(config(admin), env);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        message = (err as Error).message;
      }
      expect(message).toContain(`test.yaml: ${expected}`);
      for (const value of Object.values(env)) expect(message).not.toContain(value);
    }
  });

  it('reads TLS files and reports unreadable ones', () => {
    const cert = file('cert.pem', 'CERT');
    const key = file('key.pem', 'KEY');
    expect(loadAdminSecurity(config({ tls: { cert_file: cert, key_file: key } }), {}).tls).toEqual({
      cert: Buffer.from('CERT'),
      key: Buffer.from('KEY'),
    });
    expect(() => loadAdminSecurity(config({ tls: { cert_file: cert, key_file: join(dir, 'nokey') } }), {})).toThrow(
      /admin\.tls\.key_file: cannot read ".*nokey": file not found/,
    );
  });
});

describe('bearer tokens', () => {
  it('parses the Bearer scheme case-insensitively and nothing else', () => {
    expect(bearerToken(`Bearer ${TOKEN}`)).toBe(TOKEN);
    expect(bearerToken(`bearer   ${TOKEN}`)).toBe(TOKEN);
    expect(bearerToken(undefined)).toBeNull();
    expect(bearerToken('Bearer')).toBeNull();
    expect(bearerToken(`Basic ${TOKEN}`)).toBeNull();
    expect(bearerToken(`Bearer ${TOKEN} extra`)).toBeNull();
  });

  it('accepts only a presented token whose digest matches one accepted', () => {
    const accepted = [digestToken(TOKEN), digestToken(`${TOKEN}-scrape`)];
    expect(tokenAccepted(TOKEN, accepted)).toBe(true);
    expect(tokenAccepted(`${TOKEN}-scrape`, accepted)).toBe(true);
    expect(tokenAccepted(`${TOKEN}x`, accepted)).toBe(false);
    expect(tokenAccepted(TOKEN.slice(0, -1), accepted)).toBe(false);
    expect(tokenAccepted(null, accepted)).toBe(false);
    // The digest of '' is not a way in, even if someone configured it.
    expect(tokenAccepted(null, [digestToken('')])).toBe(false);
    expect(tokenAccepted(TOKEN, [])).toBe(false);
  });
});
