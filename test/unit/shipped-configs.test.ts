import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { runPolicyTestFile } from '../../src/cli/policy-test.js';
import { loadConfig } from '../../src/load.js';

/**
 * Every config the repository ships (config/*.yaml) loads as `serve` and
 * `check-config` load it, and has a decision test file beside it whose cases
 * all pass, with at least one case per upstream that states the bucket and
 * the region the proxy decides on: a route that forwards a prefix as part of
 * the path, or reads the bucket from the wrong place, fails here.
 * (deploy/kubernetes/configmap.yaml's config is checked in deploy-kubernetes.test.ts.)
 */
const CONFIG_DIR = fileURLToPath(new URL('../../config/', import.meta.url));
const configs = readdirSync(CONFIG_DIR).filter((f) => f.endsWith('.yaml') && !f.endsWith('.tests.yaml'));

describe('shipped configs', () => {
  it('are the ones expected (a new config needs a tests file beside it)', () => {
    expect(configs.sort()).toEqual(['container.yaml', 'default.yaml', 'example.yaml']);
  });

  describe.each(configs)('%s', (name) => {
    const testsFile = `${CONFIG_DIR}${name.replace(/\.yaml$/, '.tests.yaml')}`;

    it('loads with every check serve runs', () => {
      expect(() => loadConfig(`${CONFIG_DIR}${name}`)).not.toThrow();
    });

    it('passes its decision tests', () => {
      const failed = runPolicyTestFile(testsFile).filter((r) => !r.passed);
      expect(failed).toEqual([]);
    });

    it('has a case per upstream that states the bucket and region decided on', () => {
      const upstreams = loadConfig(`${CONFIG_DIR}${name}`).upstreams.map((u) => u.name);
      const cases = (parseYaml(readFileSync(testsFile, 'utf8')) as { cases: { expect: Record<string, unknown> }[] }).cases;
      const covered = new Set(cases.filter((c) => 'bucket' in c.expect && 'region' in c.expect).map((c) => c.expect.upstream));
      expect(upstreams.filter((u) => !covered.has(u))).toEqual([]);
    });
  });
});
