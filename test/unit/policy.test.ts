import { describe, expect, it } from 'vitest';
import { compilePolicy, decide, type Decision, type RequestFacts } from '../../src/policy/engine.js';
import { compileGlob } from '../../src/policy/glob.js';
import { parseConfigText } from '../../src/server.js';

const CONFIG = `
allowed_jurisdictions: [US]
mode: enforce
unknown_location: block
upstreams:
  - { name: s3-us, url: "http://127.0.0.1:1", route: { path_prefix: /a }, region: us-east-1 }
  - { name: s3-eu, url: "http://127.0.0.1:2", route: { path_prefix: /b }, region: eu-west-1 }
  - { name: pilot, url: "http://127.0.0.1:3", route: { path_prefix: /c }, region: eu-west-1 }
  - { name: loose, url: "http://127.0.0.1:4", route: { path_prefix: /d } }
  - { name: tmp, url: "http://127.0.0.1:5", route: { path_prefix: /e } }
rules:
  - name: pilot-monitor
    match: { upstreams: [pilot], operations: [write] }
    mode: monitor
  - name: warn-uploads
    match: { upstreams: [s3-eu], methods: [POST], paths: ["/uploads/**"] }
    mode: warn
  - name: eu-ok-for-archive
    match: { upstreams: [s3-eu], paths: ["/archive/*"] }
    allow_jurisdictions: [US, IE, DE]
  - name: loose-unknown
    match: { upstreams: [loose] }
    unknown_location: allow
  - name: read-guard
    match: { upstreams: [tmp], operations: [read] }
    allow_jurisdictions: [US]
`;

const policy = compilePolicy(parseConfigText(CONFIG, 'p.yaml'));
const facts = (upstream: string, operation: 'read' | 'write', method = operation === 'read' ? 'GET' : 'PUT', path = '/bucket/key'): RequestFacts => ({ upstream, operation, method, path });

type Expect = Pick<Decision, 'action' | 'rule' | 'mode' | 'reason' | 'effective'>;
const table: [string, RequestFacts, string[], Expect][] = [
  ['US write allowed by the default rule', facts('s3-us', 'write'), ['US'], { action: 'allow', rule: 'default', mode: 'enforce', reason: 'jurisdiction_allowed', effective: 'forwarded' }],
  ['IE write refused by the default rule', facts('s3-eu', 'write'), ['IE'], { action: 'block', rule: 'default', mode: 'enforce', reason: 'jurisdiction_not_allowed', effective: 'refused' }],
  ['read with no rule allowed', facts('s3-eu', 'read'), ['IE'], { action: 'allow', rule: null, mode: 'enforce', reason: 'read_allowed', effective: 'forwarded' }],
  ['unknown location write fails closed', facts('tmp', 'write'), [], { action: 'block', rule: 'default', mode: 'enforce', reason: 'unknown_location', effective: 'refused' }],
  ['unknown location allowed by rule', facts('loose', 'write'), [], { action: 'allow', rule: 'loose-unknown', mode: 'enforce', reason: 'unknown_location', effective: 'forwarded' }],
  ['conflicting signals block', facts('s3-us', 'write'), ['US', 'DE'], { action: 'block', rule: 'default', mode: 'enforce', reason: 'location_conflict', effective: 'refused' }],
  ['monitor records a would-block and forwards', facts('pilot', 'write'), ['IE'], { action: 'block', rule: 'pilot-monitor', mode: 'monitor', reason: 'jurisdiction_not_allowed', effective: 'forwarded' }],
  ['monitor allow', facts('pilot', 'write'), ['US'], { action: 'allow', rule: 'pilot-monitor', mode: 'monitor', reason: 'jurisdiction_allowed', effective: 'forwarded' }],
  ['warn forwards a block', facts('s3-eu', 'write', 'POST', '/uploads/x/y'), ['IE'], { action: 'block', rule: 'warn-uploads', mode: 'warn', reason: 'jurisdiction_not_allowed', effective: 'forwarded' }],
  ['method mismatch skips the warn rule', facts('s3-eu', 'write', 'PUT', '/uploads/x/y'), ['IE'], { action: 'block', rule: 'default', mode: 'enforce', reason: 'jurisdiction_not_allowed', effective: 'refused' }],
  ['path glob * stays in one segment', facts('s3-eu', 'write', 'PUT', '/archive/a'), ['IE'], { action: 'allow', rule: 'eu-ok-for-archive', mode: 'enforce', reason: 'jurisdiction_allowed', effective: 'forwarded' }],
  ['path glob * does not cross segments', facts('s3-eu', 'write', 'PUT', '/archive/a/b'), ['IE'], { action: 'block', rule: 'default', mode: 'enforce', reason: 'jurisdiction_not_allowed', effective: 'refused' }],
  ['several allowed jurisdictions are all allowed', facts('s3-eu', 'write', 'PUT', '/archive/a'), ['IE', 'DE'], { action: 'allow', rule: 'eu-ok-for-archive', mode: 'enforce', reason: 'jurisdiction_allowed', effective: 'forwarded' }],
  ['a rule on reads applies to reads', facts('tmp', 'read'), ['DE'], { action: 'block', rule: 'read-guard', mode: 'enforce', reason: 'jurisdiction_not_allowed', effective: 'refused' }],
  ['a rule on reads with unknown location fails closed', facts('tmp', 'read'), [], { action: 'block', rule: 'read-guard', mode: 'enforce', reason: 'unknown_location', effective: 'refused' }],
];

describe('policy engine', () => {
  it.each(table)('%s', (_name, f, jurisdictions, expected) => {
    const d = decide(policy, f, jurisdictions);
    expect({ action: d.action, rule: d.rule, mode: d.mode, reason: d.reason, effective: d.effective }).toEqual(expected);
    expect(d.jurisdictions).toEqual(jurisdictions);
  });

  it('first matching rule wins', () => {
    // Both warn-uploads and eu-ok-for-archive could match a POST to /archive/x; warn-uploads needs /uploads/**.
    const d = decide(policy, facts('s3-eu', 'write', 'POST', '/archive/x'), ['IE']);
    expect(d.rule).toBe('eu-ok-for-archive');
  });

  it('hashes the policy: equal configs hash equal, any rule change changes the hash', () => {
    const again = compilePolicy(parseConfigText(CONFIG, 'elsewhere.yaml'));
    expect(again.hash).toBe(policy.hash);
    expect(policy.hash).toMatch(/^[0-9a-f]{64}$/);
    const changed = compilePolicy(parseConfigText(CONFIG.replace('mode: monitor', 'mode: enforce'), 'p.yaml'));
    expect(changed.hash).not.toBe(policy.hash);
    const listen = compilePolicy(parseConfigText(CONFIG + 'listen: { port: 1234 }\n', 'p.yaml'));
    expect(listen.hash).toBe(policy.hash);
  });
});

describe('path globs', () => {
  it.each([
    ['/uploads/**', '/uploads/a/b/c', true],
    ['/uploads/**', '/upload', false],
    ['/a/*/c', '/a/b/c', true],
    ['/a/*/c', '/a/b/x/c', false],
    ['/a/?', '/a/b', true],
    ['/a.b/(x)', '/a.b/(x)', true],
    ['/a.b', '/aXb', false],
  ])('%s ~ %s → %s', (glob, path, expected) => {
    expect(compileGlob(glob).test(path)).toBe(expected);
  });
});

describe('exceptions', () => {
  const withExceptions = `${CONFIG}
exceptions:
  - name: migration
    match: { upstreams: [s3-eu], buckets: [legacy], paths: ["/legacy/move/**"] }
    action: allow
    expires: 2027-01-01T00:00:00Z
    ticket: SEC-1
    reason: one-off migration
  - name: quarantine
    match: { upstreams: [s3-us], principals: [AKIAQUARANTINED] }
    action: block
    expires: 2027-01-01T00:00:00Z
    ticket: SEC-2
    reason: compromised key
`;
  const p = compilePolicy(parseConfigText(withExceptions, 'p.yaml'));
  const before = Date.parse('2026-12-31T23:59:59Z');
  const after = Date.parse('2027-01-01T00:00:00Z');
  const move = { upstream: 's3-eu', operation: 'write' as const, method: 'PUT', path: '/legacy/move/x', bucket: 'legacy' };

  it('an allow exception changes a block before expiry and names itself', () => {
    const d = decide(p, move, ['IE'], before);
    expect(d).toMatchObject({ action: 'allow', reason: 'exception_allowed', effective: 'forwarded', rule: 'default' });
    expect(d.exception).toEqual({ name: 'migration', ticket: 'SEC-1', expires: '2027-01-01T00:00:00Z' });
  });

  it('stops applying on its own at expiry (injected clock, no reload)', () => {
    const d = decide(p, move, ['IE'], after);
    expect(d).toMatchObject({ action: 'block', reason: 'jurisdiction_not_allowed', effective: 'refused' });
    expect(d.exception).toBeUndefined();
  });

  it('matches narrowly: other buckets and paths are untouched', () => {
    expect(decide(p, { ...move, bucket: 'other', path: '/other/move/x' }, ['IE'], before).exception).toBeUndefined();
    expect(decide(p, { ...move, path: '/legacy/x' }, ['IE'], before).exception).toBeUndefined();
  });

  it('a block exception refuses a principal that rules would allow', () => {
    const d = decide(p, { upstream: 's3-us', operation: 'write', method: 'PUT', path: '/b/k', bucket: 'b', principal: 'AKIAQUARANTINED' }, ['US'], before);
    expect(d).toMatchObject({ action: 'block', reason: 'exception_blocked', effective: 'refused' });
    expect(decide(p, { upstream: 's3-us', operation: 'write', method: 'PUT', path: '/b/k', principal: 'AKIAOTHER' }, ['US'], before).action).toBe('allow');
  });

  it('an exception that would not change the decision is not named', () => {
    expect(decide(p, move, ['US'], before).exception).toBeUndefined();
  });

  it('check-config reports malformed exceptions', () => {
    const bad = withExceptions.replace('expires: 2027-01-01T00:00:00Z\n    ticket: SEC-1', 'expires: next tuesday\n    ticket: SEC-1');
    expect(() => parseConfigText(bad, 'p.yaml')).toThrowError(/exceptions\[0\]\.expires: "next tuesday" is not a timestamp \(expected RFC 3339/);
    expect(() => parseConfigText(withExceptions.replace('    ticket: SEC-2\n', ''), 'p.yaml')).toThrowError(/exceptions\[1\]\.ticket: is required but missing/);
  });
});

describe('shadow policy', () => {
  it('the planner reports the shadow decision only when it differs, and acts on the active one', async () => {
    const { buildPlanner } = await import('../../src/load.js');
    const active = parseConfigText(CONFIG, 'p.yaml');
    const candidate = parseConfigText(CONFIG.replace('allowed_jurisdictions: [US]', 'allowed_jurisdictions: [US, IE]'), 'candidate.yaml');
    const planner = buildPlanner(active, candidate);
    const eu = planner.plan({ method: 'PUT', target: '/b/bucket/key', host: 'h' });
    expect(eu).toMatchObject({ kind: 'decided', decision: { action: 'block', effective: 'refused' }, shadow: { action: 'allow', reason: 'jurisdiction_allowed' } });
    const us = planner.plan({ method: 'PUT', target: '/a/bucket/key', host: 'h' });
    expect(us).toMatchObject({ kind: 'decided', decision: { action: 'allow' }, shadow: null });
  });
});

describe('lockdown', () => {
  it('turns monitor and warn rules into enforce, refuses unknown locations, and is marked', () => {
    const now = Date.now();
    expect(decide(policy, facts('pilot', 'write'), ['IE'], now, true)).toMatchObject({ action: 'block', mode: 'enforce', effective: 'refused', lockdown: true });
    expect(decide(policy, facts('loose', 'write'), [], now, true)).toMatchObject({ action: 'block', reason: 'unknown_location', effective: 'refused' });
    expect(decide(policy, facts('s3-us', 'write'), ['US'], now, true)).toMatchObject({ action: 'allow', effective: 'forwarded', lockdown: true });
    // Reads no rule restricts stay allowed.
    expect(decide(policy, facts('s3-eu', 'read'), ['IE'], now, true)).toMatchObject({ action: 'allow', reason: 'read_allowed' });
    expect(decide(policy, facts('pilot', 'write'), ['IE'], now, false).lockdown).toBeUndefined();
  });

  it('suspends allow-exceptions', () => {
    const p = compilePolicy(parseConfigText(`${CONFIG}
exceptions:
  - { name: m, match: { upstreams: [s3-eu] }, action: allow, expires: "2999-01-01T00:00:00Z", ticket: T, reason: r }
`, 'p.yaml'));
    const f = facts('s3-eu', 'write');
    expect(decide(p, f, ['IE'], Date.now(), false)).toMatchObject({ action: 'allow', reason: 'exception_allowed' });
    expect(decide(p, f, ['IE'], Date.now(), true)).toMatchObject({ action: 'block', reason: 'jurisdiction_not_allowed', lockdown: true });
  });
});
