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
