import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Namespace, Service } from 'kubernetes-models/v1';
import type { IContainer, IPodSpec, IProbe } from 'kubernetes-models/v1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import type { Config } from '../../src/config/load.js';
import { buildPlanner, parseConfigText } from '../../src/load.js';

/**
 * deploy/kubernetes: every manifest validated against the Kubernetes (and
 * Prometheus Operator) schemas by kubernetes-models, and held to the
 * deployment's rules: security settings, probes on real admin paths, a
 * policy that passes check-config, a drain that fits the grace period.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIR = 'deploy/kubernetes';
const read = (file: string) => readFileSync(`${ROOT}${file}`, 'utf8');
const TOKEN = 'x'.repeat(64);

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

const files = readdirSync(`${ROOT}${DIR}`)
  .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .sort();
const manifests = new Map<string, Manifest>();
for (const file of files) {
  const docs = parseAllDocuments(read(`${DIR}/${file}`));
  if (!Array.isArray(docs) || docs.length !== 1) throw new Error(`${file}: expected exactly one YAML document`);
  const doc = docs[0];
  if (!doc || doc.errors.length > 0) throw new Error(`${file}: ${doc?.errors.map((e) => e.message).join('; ')}`);
  manifests.set(file, doc.toJS() as Manifest);
}

function only<T>(kind: string, name?: string): T {
  const found = [...manifests.values()].filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0] as T;
}

type Workload = Manifest & {
  spec: {
    replicas?: number;
    serviceName?: string;
    podManagementPolicy?: string;
    selector: { matchLabels: Record<string, string> };
    template: { metadata: { labels: Record<string, string> }; spec: IPodSpec };
    volumeClaimTemplates?: { metadata: { name: string }; spec: { accessModes: string[] } }[];
    persistentVolumeClaimRetentionPolicy?: { whenDeleted: string; whenScaled: string };
  };
};
type ServiceManifest = Manifest & {
  spec: { clusterIP?: string; selector: Record<string, string>; ports: { name: string; port: number; targetPort: string | number }[] };
};
interface PolicyPeer {
  podSelector?: { matchLabels?: Record<string, string> };
  namespaceSelector?: { matchLabels?: Record<string, string> };
  ipBlock?: { cidr: string };
}
interface PolicyRule {
  from?: PolicyPeer[];
  to?: PolicyPeer[];
  ports?: { port: number | string; protocol: string }[];
}
type NetworkPolicyManifest = Manifest & {
  spec: { podSelector: { matchLabels: Record<string, string> }; policyTypes: string[]; ingress?: PolicyRule[]; egress?: PolicyRule[] };
};

const proxy = only<Workload>('StatefulSet', 'residency-proxy');
const pod = proxy.spec.template.spec;
const container = pod.containers.find((c) => c.name === 'residency-proxy') as IContainer;
const redis = only<Workload>('Deployment', 'redis');
const configMap = only<Manifest & { data: Record<string, string> }>('ConfigMap', 'residency-proxy-policy');
const dataService = only<ServiceManifest>('Service', 'residency-proxy');
const adminService = only<ServiceManifest>('Service', 'residency-proxy-admin');
const policyText = configMap.data['config.yaml'] ?? '';
const POLICY_ENV = { RESIDENCY_ADMIN_TOKEN: TOKEN, RESIDENCY_METRICS_TOKEN: 'm'.repeat(64) };
const loadPolicy = () => parseConfigText(policyText, `${DIR}/configmap.yaml`, POLICY_ENV);
// Loaded here for the other tests; a policy that fails check-config fails
// the test below with its problems (and the others with it).
let policy: Config;
try {
  policy = loadPolicy();
} catch {
  policy = { admin: {}, listen: {}, limits: {}, decision_log: { path: '' } } as unknown as Config;
}

const containerPort = (c: IContainer, name: string | number | undefined) =>
  typeof name === 'number' ? name : c.ports?.find((p) => p.name === name)?.containerPort;
const matches = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
const envValue = (c: IContainer, name: string) => c.env?.find((e) => e.name === name);

describe('deploy/kubernetes: files', () => {
  it('kustomization.yaml lists every manifest, and only existing ones', () => {
    const kustomization = parseYaml(read(`${DIR}/kustomization.yaml`)) as { resources: string[]; namespace: string; images?: { name: string; newTag?: string }[] };
    expect([...kustomization.resources].sort()).toEqual(files);
    for (const r of kustomization.resources) expect(existsSync(`${ROOT}${DIR}/${r}`), r).toBe(true);
    expect(kustomization.namespace).toBe(only<Manifest>('Namespace').metadata.name);
    // The image tag follows the package version.
    const pkg = JSON.parse(read('package.json')) as { version: string };
    const image = kustomization.images?.find((i) => i.name === container.image);
    expect(image?.newTag).toBe(pkg.version);
  });

  it('holds one object per file', () => {
    expect(manifests.size).toBe(files.length);
    for (const [file, m] of manifests) {
      expect(typeof m.kind, file).toBe('string');
      expect(m.metadata?.name, file).toBeTruthy();
    }
  });
});

describe('deploy/kubernetes: schemas', () => {
  // apiVersion/kind → the kubernetes-models class that validates it.
  const MODELS: Record<string, new (data: never) => { validate(): void }> = {
    'v1/Namespace': Namespace,
    'v1/ConfigMap': ConfigMap,
    'v1/Service': Service,
    'apps/v1/StatefulSet': StatefulSet,
    'apps/v1/Deployment': Deployment,
    'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
    'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
    'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
    'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
    'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
  };

  it.each(files)('%s validates against its schema', (file) => {
    const m = manifests.get(file) as Manifest;
    const Model = MODELS[`${m.apiVersion}/${m.kind}`];
    expect(Model, `${file}: no schema for ${m.apiVersion} ${m.kind}`).toBeDefined();
    expect(() => new (Model as new (data: Manifest) => { validate(): void })(m).validate()).not.toThrow();
  });

  it('the validator rejects a broken object (it is live)', () => {
    const broken = structuredClone(proxy) as Workload;
    broken.spec.podManagementPolicy = 'Sometimes';
    (broken.spec.template.spec.containers[0] as { ports: unknown }).ports = [{ containerPort: 'eighty' }];
    expect(() => new StatefulSet(broken as never).validate()).toThrow();
  });
});

describe('deploy/kubernetes: the proxy StatefulSet', () => {
  it('runs three replicas with a decision log volume per replica that outlives pods', () => {
    expect(proxy.spec.replicas).toBe(3);
    expect(proxy.spec.podManagementPolicy).toBe('Parallel');
    expect(proxy.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
    const claim = proxy.spec.volumeClaimTemplates?.find((t) => t.metadata.name === 'decisions');
    expect(claim?.spec.accessModes).toEqual(['ReadWriteOnce']);
    const mount = container.volumeMounts?.find((v) => v.name === 'decisions');
    expect(mount?.mountPath).toBe(posix.dirname(policy.decision_log.path));
    expect(mount?.readOnly).not.toBe(true);
  });

  it('selects its own pods and is governed by the headless admin Service', () => {
    expect(matches(proxy.spec.selector.matchLabels, proxy.spec.template.metadata.labels)).toBe(true);
    expect(proxy.spec.serviceName).toBe(adminService.metadata.name);
    expect(adminService.spec.clusterIP).toBe('None');
  });

  it('locks down every workload: non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp', () => {
    const dockerUser = /^USER\s+(\d+)/m.exec(read('Dockerfile'))?.[1];
    for (const workload of [proxy, redis]) {
      const spec = workload.spec.template.spec;
      const name = workload.metadata.name;
      expect(spec.securityContext?.runAsNonRoot, name).toBe(true);
      expect(spec.securityContext?.seccompProfile?.type, name).toBe('RuntimeDefault');
      expect(spec.automountServiceAccountToken, name).toBe(false);
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
        const sc = c.securityContext;
        expect(sc?.runAsNonRoot, c.name).toBe(true);
        expect(sc?.runAsUser, c.name).toBeGreaterThan(0);
        expect(sc?.readOnlyRootFilesystem, c.name).toBe(true);
        expect(sc?.allowPrivilegeEscalation, c.name).toBe(false);
        expect(sc?.privileged ?? false, c.name).toBe(false);
        expect(sc?.capabilities?.drop, c.name).toEqual(['ALL']);
        expect(sc?.capabilities?.add ?? [], c.name).toEqual([]);
        expect(sc?.seccompProfile?.type, c.name).toBe('RuntimeDefault');
        expect(c.resources?.requests?.cpu, c.name).toBeDefined();
        expect(c.resources?.requests?.memory, c.name).toBeDefined();
        expect(c.resources?.limits?.cpu, c.name).toBeDefined();
        expect(c.resources?.limits?.memory, c.name).toBeDefined();
        expect(c.image, c.name).not.toMatch(/:latest$/);
      }
    }
    // The image's user, so file ownership in the image and on volumes agrees.
    expect(String(container.securityContext?.runAsUser)).toBe(dockerUser);
    expect(String(pod.securityContext?.fsGroup)).toBe(dockerUser);
    // The only writable mounts are the decision log and /tmp.
    const writable = (container.volumeMounts ?? []).filter((v) => !v.readOnly).map((v) => v.mountPath);
    expect(writable.sort()).toEqual([posix.dirname(policy.decision_log.path), '/tmp'].sort());
  });

  it('mounts the policy ConfigMap as a directory (updates propagate) and points RESIDENCY_CONFIG into it', () => {
    const volume = pod.volumes?.find((v) => v.configMap?.name === configMap.metadata.name);
    expect(volume).toBeDefined();
    const mount = container.volumeMounts?.find((v) => v.name === volume?.name);
    expect(mount?.subPath).toBeUndefined();
    expect(mount?.readOnly).toBe(true);
    expect(envValue(container, 'RESIDENCY_CONFIG')?.value).toBe(`${mount?.mountPath}/config.yaml`);
    expect(Object.keys(configMap.data)).toEqual(['config.yaml']);
  });

  it('embeds a policy that passes check-config and matches the pod', () => {
    try {
      loadPolicy();
    } catch (err) {
      expect.fail(`check-config rejects configmap.yaml's config.yaml:\n${(err as Error).message}`);
    }
    expect(policy.listen.host).toBe('0.0.0.0');
    expect(policy.admin.host).toBe('0.0.0.0');
    expect(containerPort(container, 'http')).toBe(policy.listen.port);
    expect(containerPort(container, 'admin')).toBe(policy.admin.port);
    // The tokens come from Secrets, through the variables the policy names.
    const secrets = { token_env: 'residency-proxy-admin', metrics_token_env: 'residency-proxy-metrics' } as const;
    for (const [key, secret] of Object.entries(secrets)) {
      const variable = (policy.admin as Record<string, unknown>)[key] as string;
      expect(variable, `admin.${key}`).toBeTruthy();
      const ref = envValue(container, variable)?.valueFrom?.secretKeyRef;
      expect(ref?.name, variable).toBe(secret);
      expect(ref?.key, variable).toBe('token');
      expect(ref?.optional ?? false, variable).toBe(false);
    }
    // No token is written in the policy itself.
    expect(policyText).not.toMatch(/token_file|token:/);
    // No Service-link variables: a Service named "admin" would set ADMIN_PORT.
    expect(pod.enableServiceLinks).toBe(false);
    // Redis: the demo Service, by name and port.
    const url = new URL(policy.redis?.url ?? '');
    const redisService = only<ServiceManifest>('Service', 'redis');
    expect(url.hostname).toBe(redisService.metadata.name);
    expect(redisService.spec.ports.map((p) => p.port)).toContain(Number(url.port));
  });

  it("embeds a policy whose upstreams decide on the bucket and region of the path, under the Service's name", () => {
    const planner = buildPlanner(policy);
    const host = `${dataService.metadata.name}.${dataService.metadata.namespace}.svc:${policy.listen.port}`;
    const decided = (path: string) => {
      const plan = planner.plan({ method: 'PUT', target: path, host });
      return plan.kind === 'decided' ? { upstream: plan.route.upstream.name, bucket: plan.bucket, region: plan.location.region, decision: plan.decision.action } : plan;
    };
    expect(policy.upstreams.map((u) => u.name)).toEqual(['demo-us', 'demo-eu']);
    expect(decided('/us/photos/cat.jpg')).toEqual({ upstream: 'demo-us', bucket: 'photos', region: 'us-east-1', decision: 'allow' });
    expect(decided('/eu/photos/cat.jpg')).toEqual({ upstream: 'demo-eu', bucket: 'photos', region: 'eu-west-1', decision: 'block' });
  });

  it('probes real admin paths on the admin port: liveness on /healthz, readiness on /readyz with the token', () => {
    const adminSource = readdirSync(`${ROOT}src/admin`)
      .filter((f) => f.endsWith('.ts'))
      .map((f) => read(`src/admin/${f}`))
      .join('\n');
    expect(adminSource).toContain("'/healthz'");
    expect(adminSource).toContain("'/readyz'");

    for (const probe of [container.livenessProbe, container.startupProbe]) {
      expect(probe?.httpGet?.path).toBe('/healthz');
      expect(containerPort(container, probe?.httpGet?.port)).toBe(policy.admin.port);
    }
    const readiness = container.readinessProbe as IProbe;
    expect(readiness.httpGet).toBeUndefined();
    const script = readiness.exec?.command?.join(' ') ?? '';
    expect(readiness.exec?.command?.[0]).toBe('node');
    expect(script).toContain('/readyz');
    expect(script).toContain(`process.env.${policy.admin.token_env}`);
    expect(script).toContain(String(policy.admin.port));
    // An exec probe must finish within its timeout; the script aborts itself sooner.
    const abortMs = Number(/AbortSignal\.timeout\((\d+)\)/.exec(script)?.[1]);
    expect(abortMs).toBeLessThan((readiness.timeoutSeconds ?? 1) * 1000);
  });

  it('drains before SIGTERM and ends within the grace period', () => {
    const command = container.lifecycle?.preStop?.exec?.command ?? [];
    expect(command[0]).toBe('sleep');
    const preStop = Number(command[1]);
    expect(preStop).toBeGreaterThanOrEqual(5);
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    expect(grace).toBeGreaterThan(preStop + policy.limits.shutdown_grace_ms / 1000);
  });
});

describe('deploy/kubernetes: the readiness probe script', () => {
  let server: Server;
  let port = 0;
  let status = 200;
  const seen: { path: string; auth: string | undefined }[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push({ path: req.url ?? '', auth: req.headers.authorization });
      res.writeHead(req.headers.authorization === `Bearer ${TOKEN}` ? status : 401).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const probe = (env: NodeJS.ProcessEnv) =>
    new Promise<number>((resolve) => {
      const [, ...rest] = container.readinessProbe?.exec?.command ?? [];
      execFile(process.execPath, rest, { env, timeout: 15_000 }, (err) => resolve(err ? ((err as { code?: number }).code ?? 1) : 0));
    });

  it('passes only when /readyz answers 200 to the bearer token', async () => {
    const tokenEnv = policy.admin.token_env as string;
    status = 200;
    expect(await probe({ ADMIN_PORT: String(port), [tokenEnv]: TOKEN })).toBe(0);
    expect(seen.at(-1)).toEqual({ path: '/readyz', auth: `Bearer ${TOKEN}` });
    // Not ready.
    status = 503;
    expect(await probe({ ADMIN_PORT: String(port), [tokenEnv]: TOKEN })).toBe(1);
    // Wrong or missing token: 401, not ready.
    status = 200;
    expect(await probe({ ADMIN_PORT: String(port), [tokenEnv]: 'wrong' })).toBe(1);
    expect(await probe({ ADMIN_PORT: String(port) })).toBe(1);
    expect(seen.at(-1)?.auth).toBeUndefined();
  }, 30_000);
});

describe('deploy/kubernetes: Services, PDB, HPA', () => {
  it('a data Service and a separate admin Service, each on its own port', () => {
    for (const svc of [dataService, adminService]) {
      expect(matches(svc.spec.selector, proxy.spec.template.metadata.labels), svc.metadata.name).toBe(true);
      for (const p of svc.spec.ports) expect(containerPort(container, p.targetPort), `${svc.metadata.name} ${p.name}`).toBe(p.port);
    }
    expect(dataService.spec.ports.map((p) => p.port)).toEqual([policy.listen.port]);
    expect(adminService.spec.ports.map((p) => p.port)).toEqual([policy.admin.port]);
  });

  it('a PodDisruptionBudget over the proxy pods', () => {
    const pdb = only<Manifest & { spec: { maxUnavailable?: number; minAvailable?: number; selector: { matchLabels: Record<string, string> } } }>('PodDisruptionBudget');
    expect(matches(pdb.spec.selector.matchLabels, proxy.spec.template.metadata.labels)).toBe(true);
    expect(pdb.spec.maxUnavailable).toBe(1);
  });

  it('an autoscaling/v2 HorizontalPodAutoscaler on CPU for the StatefulSet, never below its replicas', () => {
    const hpa = only<
      Manifest & {
        spec: {
          scaleTargetRef: { apiVersion: string; kind: string; name: string };
          minReplicas: number;
          maxReplicas: number;
          metrics: { type: string; resource?: { name: string; target: { type: string; averageUtilization?: number } } }[];
        };
      }
    >('HorizontalPodAutoscaler');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: proxy.apiVersion, kind: proxy.kind, name: proxy.metadata.name });
    expect(hpa.spec.minReplicas).toBe(proxy.spec.replicas);
    expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
    expect(hpa.spec.metrics.some((m) => m.type === 'Resource' && m.resource?.name === 'cpu' && m.resource.target.type === 'Utilization')).toBe(true);
    // Utilization is relative to the request, so there must be one.
    expect(container.resources?.requests?.cpu).toBeDefined();
  });
});

describe('deploy/kubernetes: NetworkPolicy', () => {
  const np = only<NetworkPolicyManifest>('NetworkPolicy', 'residency-proxy');
  const allows = (rule: PolicyRule, port: number, protocol = 'TCP') =>
    (rule.ports ?? []).some((p) => p.port === port && (p.protocol ?? 'TCP') === protocol);

  it('applies to the proxy pods, both directions', () => {
    expect(matches(np.spec.podSelector.matchLabels, proxy.spec.template.metadata.labels)).toBe(true);
    expect([...np.spec.policyTypes].sort()).toEqual(['Egress', 'Ingress']);
  });

  it('admits the admin port only from the monitoring namespace', () => {
    const adminRules = (np.spec.ingress ?? []).filter((r) => r.ports === undefined || allows(r, policy.admin.port ?? 9464));
    expect(adminRules.length).toBe(1);
    expect(adminRules[0]?.from).toEqual([{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }]);
    // Every ingress rule names its ports: nothing else is opened by accident.
    for (const rule of np.spec.ingress ?? []) expect(rule.ports?.length).toBeGreaterThan(0);
    expect((np.spec.ingress ?? []).some((r) => allows(r, policy.listen.port ?? 8080))).toBe(true);
  });

  it('lets out only DNS, Redis and the storage CIDRs', () => {
    const egress = np.spec.egress ?? [];
    for (const rule of egress) {
      expect(rule.to?.length, JSON.stringify(rule)).toBeGreaterThan(0);
      expect(rule.ports?.length, JSON.stringify(rule)).toBeGreaterThan(0);
    }
    const dns = egress.filter((r) => allows(r, 53, 'UDP') && allows(r, 53, 'TCP'));
    expect(dns.length).toBe(1);
    const redisRule = egress.find((r) => allows(r, 6379));
    expect(matches(redisRule?.to?.[0]?.podSelector?.matchLabels, redis.spec.template.metadata.labels)).toBe(true);
    const storage = egress.filter((r) => r.to?.every((p) => p.ipBlock !== undefined));
    expect(storage.length).toBe(1);
    expect(storage[0]?.to?.length).toBeGreaterThan(0);
    expect(egress.length).toBe(3);
    // The CIDRs are placeholders, and say so.
    expect(read(`${DIR}/networkpolicy.yaml`)).toMatch(/PLACEHOLDER/);
  });

  it("an application namespace's policy lets its pods out only to DNS and the proxy's data port (no way around the proxy)", () => {
    const file = `${DIR}/app-namespace/egress-through-proxy.yaml`;
    const app = parseYaml(read(file)) as NetworkPolicyManifest;
    expect(() => new NetworkPolicy(app as never).validate()).not.toThrow();
    expect(app.spec.policyTypes).toEqual(['Egress']);
    const egress = app.spec.egress ?? [];
    expect(egress.length).toBe(2);
    for (const rule of egress) expect(rule.to?.every((peer) => peer.ipBlock === undefined), JSON.stringify(rule)).toBe(true);
    expect(egress.filter((r) => allows(r, 53, 'UDP') && allows(r, 53, 'TCP')).length).toBe(1);
    const toProxy = egress.find((r) => allows(r, policy.listen.port ?? 8080))!;
    expect(toProxy.ports).toEqual([{ port: dataService.spec.ports[0]!.targetPort === 'http' ? policy.listen.port : dataService.spec.ports[0]!.targetPort, protocol: 'TCP' }]);
    expect(toProxy.to).toEqual([
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': only<Manifest>('Namespace').metadata.name } },
        podSelector: { matchLabels: np.spec.podSelector.matchLabels },
      },
    ]);
  });

  it('lets only the proxy reach Redis', () => {
    const rp = only<NetworkPolicyManifest>('NetworkPolicy', 'redis');
    expect(matches(rp.spec.podSelector.matchLabels, redis.spec.template.metadata.labels)).toBe(true);
    expect(rp.spec.ingress?.length).toBe(1);
    expect(matches(rp.spec.ingress?.[0]?.from?.[0]?.podSelector?.matchLabels, proxy.spec.template.metadata.labels)).toBe(true);
    expect(rp.spec.egress).toEqual([]);
  });
});

describe('deploy/kubernetes: monitoring', () => {
  it('the ServiceMonitor scrapes /metrics through the admin Service with the scrape token, as the job the alerts expect', () => {
    const sm = only<
      Manifest & {
        spec: {
          jobLabel?: string;
          selector: { matchLabels: Record<string, string> };
          endpoints: { port: string; path: string; authorization?: { type: string; credentials: { name: string; key: string } } }[];
        };
      }
    >('ServiceMonitor');
    expect(matches(sm.spec.selector.matchLabels, adminService.metadata.labels)).toBe(true);
    expect(matches(sm.spec.selector.matchLabels, dataService.metadata.labels)).toBe(false);
    const endpoint = sm.spec.endpoints[0];
    expect(adminService.spec.ports.map((p) => p.name)).toContain(endpoint?.port);
    expect(endpoint?.path).toBe('/metrics');
    const metricsEnv = (policy.admin as Record<string, unknown>).metrics_token_env as string;
    const ref = envValue(container, metricsEnv)?.valueFrom?.secretKeyRef;
    expect(endpoint?.authorization).toEqual({ type: 'Bearer', credentials: { name: ref?.name, key: ref?.key } });
    // Prometheus never holds the admin token.
    const adminRef = envValue(container, policy.admin.token_env as string)?.valueFrom?.secretKeyRef;
    expect(ref?.name).not.toBe(adminRef?.name);
    // The job label is the one alerts.yaml's ResidencyProxyDown selects on.
    const job = /up\{job="([^"]+)"\}/.exec(read('deploy/prometheus/alerts.yaml'))?.[1];
    expect(job).toBeTruthy();
    expect(adminService.metadata.labels?.[sm.spec.jobLabel ?? '']).toBe(job);
  });

  it('the PrometheusRule wraps the groups of deploy/prometheus/alerts.yaml verbatim', () => {
    const rule = only<Manifest & { spec: { groups: unknown[] } }>('PrometheusRule');
    const alerts = parseYaml(read('deploy/prometheus/alerts.yaml')) as { groups: unknown[] };
    expect(alerts.groups.length).toBeGreaterThan(0);
    // On failure: copy the `groups:` of alerts.yaml into prometheusrule.yaml,
    // indented two spaces under `spec:` (the command in its header does it).
    expect(rule.spec.groups, 'prometheusrule.yaml is out of date with deploy/prometheus/alerts.yaml').toEqual(alerts.groups);
  });
});

describe('deploy/kubernetes: demo Redis', () => {
  it('is pinned, selected by its Service, and says to use a managed Redis in production', () => {
    const c = redis.spec.template.spec.containers[0] as IContainer;
    expect(c.image).toMatch(/^redis:\d+\.\d+\.\d+-/);
    expect(matches(redis.spec.selector.matchLabels, redis.spec.template.metadata.labels)).toBe(true);
    const svc = only<ServiceManifest>('Service', 'redis');
    expect(matches(svc.spec.selector, redis.spec.template.metadata.labels)).toBe(true);
    expect(read(`${DIR}/redis-deployment.yaml`)).toMatch(/managed Redis/);
  });
});
