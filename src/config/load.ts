import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { parseDocument } from 'yaml';
import { ConfigSchema, type RawConfig } from './schema.js';
import { structuralProblems } from './validate.js';

/** One thing wrong with a config file: where in the file, what, and what was expected. */
export interface ConfigProblem {
  path: string;
  message: string;
  expected?: string;
}

/** A loaded, validated and frozen configuration. */
export type Config = Readonly<RawConfig> & { readonly source: string };

/** A check that needs knowledge outside `config/` (the region catalog, the policy compiler). */
export type ConfigCheck = (config: Config) => ConfigProblem[];

export class ConfigError extends Error {
  readonly code = 'RESIDENCY_ERR_CONFIG_INVALID';
  constructor(
    readonly file: string,
    readonly problems: readonly ConfigProblem[],
  ) {
    super(problems.map((p) => formatProblem(file, p)).join('\n'));
    this.name = 'ConfigError';
  }
}

export function formatProblem(file: string, p: ConfigProblem): string {
  return `${file}: ${p.path}: ${p.message}${p.expected ? ` (expected ${p.expected})` : ''}`;
}

/** Overrides for the common knobs, so a container can be tuned without a new file. */
const ENV_OVERRIDES: { env: string; apply: (raw: Record<string, unknown>, value: string) => ConfigProblem | null }[] = [
  { env: 'PORT', apply: (raw, v) => setPort(raw, 'listen', v, 'PORT') },
  { env: 'ADMIN_PORT', apply: (raw, v) => setPort(raw, 'admin', v, 'ADMIN_PORT') },
  {
    env: 'LOG_LEVEL',
    apply: (raw, v) => {
      raw.log_level = v;
      return null;
    },
  },
];

function setPort(raw: Record<string, unknown>, key: string, value: string, env: string): ConfigProblem | null {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535) {
    return { path: `$${env}`, message: `"${value}" is not a port`, expected: 'an integer from 0 to 65535' };
  }
  const section = isObject(raw[key]) ? raw[key] : {};
  raw[key] = { ...section, port };
  return null;
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true });
const validateSchema = ajv.compile<RawConfig>(ConfigSchema);

/** Parse and validate config text. Throws ConfigError listing every problem found. */
export function parseConfig(
  text: string,
  file: string,
  options: { env?: NodeJS.ProcessEnv; checks?: readonly ConfigCheck[] } = {},
): Config {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({
        path: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '(document)',
        message: (e.message.split('\n')[0] ?? 'YAML syntax error').replace(/ at line \d+, column \d+:?$/, ''),
        expected: 'valid YAML',
      })),
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  if (!isObject(raw)) {
    throw new ConfigError(file, [{ path: '(document)', message: 'is not a mapping', expected: 'a YAML mapping of keys' }]);
  }

  const problems: ConfigProblem[] = [];
  for (const { env, apply } of ENV_OVERRIDES) {
    const value = options.env?.[env];
    if (value !== undefined && value !== '') {
      const problem = apply(raw, value);
      if (problem) problems.push(problem);
    }
  }
  const valid = validateSchema(raw);
  if (!valid) problems.push(...schemaProblems(validateSchema.errors ?? []));
  resolveFilePaths(raw, dirname(resolve(file)));
  const config = deepFreeze({ ...raw, source: file }) as Config;
  // Report every problem at once: the semantic checks run even when the
  // schema failed, as far as the shapes they read allow.
  for (const check of [structuralProblems, ...(options.checks ?? [])]) {
    try {
      problems.push(...check(config));
    } catch (err) {
      if (valid) throw err;
    }
  }
  if (problems.length > 0) throw new ConfigError(file, problems);
  return config;
}

/** Read, parse and validate a config file. Throws ConfigError (a missing file is a problem too). */
export function loadConfigFile(
  file: string,
  options: { env?: NodeJS.ProcessEnv; checks?: readonly ConfigCheck[] } = {},
): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message;
    throw new ConfigError(file, [{ path: '(file)', message: reason, expected: 'a readable YAML file' }]);
  }
  return parseConfig(text, file, options);
}

/**
 * Every file a config names, by where it sits. One rule for all of them: a
 * relative name is relative to the directory of the config file that names
 * it (as for Prometheus and most daemons), never to the working directory.
 * `decision_log.path: "-"` is stdout, not a file.
 */
const FILE_FIELDS: readonly (readonly string[])[] = [
  ['decision_log', 'path'],
  ['decision_log', 'signing_key_file'],
  ['admin', 'token_file'],
  ['admin', 'metrics_token_file'],
  ['admin', 'tls', 'cert_file'],
  ['admin', 'tls', 'key_file'],
  ['location', 'geoip', 'path'],
  ['principal_keys', 'file'],
  ['shadow_policy'],
  ['forward_proxy', 'ca', 'cert_file'],
  ['forward_proxy', 'ca', 'key_file'],
  ['forward_proxy', 'users_file'],
];

/** Make the config's relative file names absolute (in place, before it is frozen). */
function resolveFilePaths(raw: Record<string, unknown>, base: string): void {
  const at = (name: string) => (name === '' || isAbsolute(name) ? name : resolve(base, name));
  for (const field of FILE_FIELDS) {
    let holder: unknown = raw;
    for (const key of field.slice(0, -1)) holder = isObject(holder) ? holder[key] : undefined;
    const key = field.at(-1)!;
    if (!isObject(holder) || typeof holder[key] !== 'string') continue;
    if (field.join('.') === 'decision_log.path' && holder[key] === '-') continue;
    holder[key] = at(holder[key]);
  }
  const listen = isObject(raw.listen) && isObject(raw.listen.tls) ? raw.listen.tls.certificates : undefined;
  for (const files of Array.isArray(listen) ? listen : []) {
    if (!isObject(files)) continue;
    for (const key of ['cert_file', 'key_file']) if (typeof files[key] === 'string') files[key] = at(files[key]);
  }
  for (const upstream of Array.isArray(raw.upstreams) ? raw.upstreams : []) {
    if (isObject(upstream) && typeof upstream.ca_file === 'string') upstream.ca_file = at(upstream.ca_file);
  }
  const ranges = isObject(raw.location) ? raw.location.cloud_ranges : undefined;
  if (Array.isArray(ranges)) {
    ranges.forEach((range: unknown, i) => {
      if (typeof range === 'string') ranges[i] = at(range);
      else if (isObject(range) && typeof range.path === 'string') range.path = at(range.path);
    });
  }
}

/** `/upstreams/0/route/host` → `upstreams[0].route.host` */
export function toPath(pointer: string, extra?: string): string {
  const parts = pointer.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (extra !== undefined) parts.push(extra);
  let out = '';
  for (const part of parts) {
    if (/^\d+$/.test(part)) out += `[${part}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(part)) out += out ? `.${part}` : part;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out || '(document)';
}

function schemaProblems(errors: ErrorObject[]): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    const problem = describeSchemaError(e);
    const key = `${problem.path}|${problem.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      problems.push(problem);
    }
  }
  return problems;
}

function describeSchemaError(e: ErrorObject): ConfigProblem {
  const schema = (e.parentSchema ?? {}) as { description?: string; type?: string };
  const got = describeValue(e.data);
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      const props = Object.keys((e.parentSchema as { properties?: object })?.properties ?? {});
      return { path: toPath(e.instancePath, key), message: 'unknown key', expected: `one of ${props.join(', ')}` };
    }
    case 'required': {
      const key = (e.params as { missingProperty: string }).missingProperty;
      return { path: toPath(e.instancePath, key), message: 'is required but missing' };
    }
    case 'type':
      return {
        path: toPath(e.instancePath),
        message: `has the wrong type: ${got}`,
        expected: schema.description ?? `${(e.params as { type: string }).type}`,
      };
    case 'enum':
      return {
        path: toPath(e.instancePath),
        message: `${got} is not allowed`,
        expected: `one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')}`,
      };
    case 'pattern':
      return { path: toPath(e.instancePath), message: `${got} is malformed`, expected: schema.description ?? e.message };
    default:
      return {
        path: toPath(e.instancePath),
        message: `${got}: ${e.message ?? 'is invalid'}`,
        ...(schema.description ? { expected: schema.description } : {}),
      };
  }
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value);
  return `${typeof value} ${String(value)}`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
