import { Type, type Static } from '@sinclair/typebox';

/** A string enum as JSON Schema `enum` (clearer errors than a union of literals). */
function OneOf<const T extends string>(values: readonly T[], options: { default?: NoInfer<T>; description?: string } = {}) {
  return Type.Unsafe<T>({ type: 'string', enum: values, description: `one of ${values.join(', ')}`, ...options });
}

/**
 * The configuration file's JSON Schema. Defaults live here (Ajv fills them in
 * with `useDefaults`); cross-field checks that a schema cannot express (a rule
 * naming a missing upstream, two upstreams on one route, region ids) live in
 * `validate.ts`.
 */

export const MODES = ['enforce', 'monitor', 'warn'] as const;
export const OPERATIONS = ['read', 'write'] as const;
export const PROVIDERS = ['s3', 'azure', 'gcs', 'generic'] as const;
const Mode = OneOf(MODES);
const Operation = OneOf(OPERATIONS);
const Provider = OneOf(PROVIDERS);
const UnknownLocation = OneOf(['block', 'allow'] as const);
const Method = Type.String({ pattern: '^[A-Z]+$', description: 'an HTTP method in upper case' });
const Jurisdiction = Type.String({ description: 'an ISO 3166-1 alpha-2 code' });
const Port = Type.Integer({ minimum: 0, maximum: 65535 });
/** A bound on `workers`, so a typo cannot fork thousands of processes. */
const MAX_WORKERS = 256;
const Seconds = Type.Number({ exclusiveMinimum: 0 });

const CertificateFiles = Type.Object(
  {
    cert_file: Type.String({ minLength: 1, description: 'a PEM certificate (chain) file' }),
    key_file: Type.String({ minLength: 1, description: 'a PEM private key file' }),
  },
  { additionalProperties: false },
);

const Listen = (host: string, port: number) =>
  Type.Object(
    {
      host: Type.String({ default: host }),
      port: Type.Optional(Port),
      // HTTPS on the data plane. Each certificate serves the names it holds (SNI); the first is the default.
      tls: Type.Optional(
        Type.Object(
          { certificates: Type.Array(CertificateFiles, { minItems: 1, description: 'certificate and key files, chosen by the names each certificate holds' }) },
          { additionalProperties: false },
        ),
      ),
    },
    { additionalProperties: false, default: { host, port } },
  );

/**
 * A site network's place: an ISO code, or { jurisdiction, region }. One
 * schema with two instance types rather than anyOf, so a mistake yields one
 * clear problem instead of one per alternative.
 */
const SiteNetwork = Type.Unsafe<string | { jurisdiction: string; region?: string }>({
  type: ['string', 'object'],
  properties: {
    jurisdiction: { type: 'string', description: 'an ISO 3166-1 alpha-2 code' },
    region: { type: 'string', minLength: 1, description: 'a cloud region id' },
  },
  required: ['jurisdiction'],
  additionalProperties: false,
  description: 'an ISO 3166-1 alpha-2 code, or { jurisdiction, region }',
});

/**
 * A cloud IP-range file: a path (format detected from its content), or
 * { path, format }. One schema with two instance types, as for SiteNetwork.
 */
const RangeFile = Type.Unsafe<string | { path: string; format?: 'aws' | 'gcp' | 'azure' }>({
  type: ['string', 'object'],
  minLength: 1,
  properties: {
    path: { type: 'string', minLength: 1, description: 'a range file' },
    format: { type: 'string', enum: ['aws', 'gcp', 'azure'], description: 'one of aws, gcp, azure' },
  },
  required: ['path'],
  additionalProperties: false,
  description: 'a file path, or { path, format: aws | gcp | azure }',
});

const ClassifyOverride = Type.Object(
  {
    method: Method,
    query: Type.Optional(Type.String({ description: 'a query parameter that must be present' })),
    path: Type.Optional(Type.String({ description: 'a path glob' })),
    operation: Operation,
  },
  { additionalProperties: false },
);

const Upstream = Type.Object(
  {
    name: Type.String({ pattern: '^[A-Za-z0-9_.-]+$', description: 'letters, digits, _ . -' }),
    url: Type.String({ description: 'an http:// or https:// URL' }),
    provider: Type.Optional(Provider),
    route: Type.Object(
      {
        path_prefix: Type.Optional(Type.String({ pattern: '^/', description: 'a path starting with /' })),
        strip_prefix: Type.Optional(Type.Boolean()),
        host: Type.Optional(Type.String({ minLength: 1 })),
      },
      { additionalProperties: false },
    ),
    region: Type.Optional(Type.String({ minLength: 1 })),
    jurisdiction: Type.Optional(Jurisdiction),
    buckets: Type.Optional(
      Type.Record(Type.String(), Type.String(), { description: 'bucket or container → region id or ISO code' }),
    ),
    preserve_host: Type.Optional(Type.Boolean()),
    ca_file: Type.Optional(
      Type.String({ minLength: 1, description: "a PEM bundle the upstream's certificate must chain to, instead of the system roots (private stores)" }),
    ),
    // With preserve_host, the storage service reads a bucket from the Host it is sent: these
    // names are its own endpoint (path style; BUCKET.<name> is virtual-hosted), besides the
    // URL's host and the route's host. Any other name is refused: the service would take it
    // as a CNAME bucket the proxy cannot place.
    endpoint_hosts: Type.Optional(
      Type.Array(Type.String({ minLength: 1, pattern: '^[A-Za-z0-9.-]+$' }), {
        minItems: 1,
        description: 'host names (no port) that the storage service serves as its endpoint, e.g. the name clients use for the proxy',
      }),
    ),
    classify: Type.Optional(Type.Array(ClassifyOverride)),
    timeouts: Type.Optional(
      Type.Object(
        { connect: Type.Optional(Seconds), headers: Type.Optional(Seconds), body: Type.Optional(Seconds) },
        { additionalProperties: false },
      ),
    ),
    // What the request itself says about where it lands (Host name, SigV4
    // scope, create-bucket bodies). Off by default for S3-compatible stores:
    // MinIO and friends answer to us-east-1 wherever they run.
    request_signals: Type.Optional(
      Type.Boolean({
        description: 'true or false; default true when the upstream host is under amazonaws.com(.cn), googleapis.com or core.windows.net',
      }),
    ),
    discovery: Type.Optional(
      Type.Object(
        {
          enabled: Type.Boolean(),
          ttl: Type.Number({ exclusiveMinimum: 0, default: 86_400, description: 'seconds a discovered region is kept' }),
          negative_ttl: Type.Number({ minimum: 0, default: 60, description: 'seconds "no region found" is kept (0: not kept)' }),
          timeout: Type.Number({ exclusiveMinimum: 0, default: 5, description: 'seconds the HEAD /BUCKET may take' }),
        },
        { additionalProperties: false, description: 'S3: ask the upstream where a bucket without a declared location is' },
      ),
    ),
    accounts: Type.Optional(
      Type.Record(Type.String(), Type.String({ minLength: 1 }), { description: 'Azure storage account → region id or ISO code' }),
    ),
  },
  { additionalProperties: false },
);

const Rule = Type.Object(
  {
    name: Type.String({ minLength: 1 }),
    match: Type.Optional(
      Type.Object(
        {
          upstreams: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
          operations: Type.Optional(Type.Array(Operation, { minItems: 1 })),
          methods: Type.Optional(Type.Array(Method, { minItems: 1 })),
          paths: Type.Optional(Type.Array(Type.String({ pattern: '^/' }), { minItems: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    allow_jurisdictions: Type.Optional(Type.Array(Jurisdiction, { minItems: 1 })),
    mode: Type.Optional(Mode),
    unknown_location: Type.Optional(UnknownLocation),
  },
  { additionalProperties: false },
);

const Exception = Type.Object(
  {
    name: Type.String({ minLength: 1 }),
    match: Type.Object(
      {
        upstreams: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
        buckets: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
        paths: Type.Optional(Type.Array(Type.String({ pattern: '^/' }), { minItems: 1 })),
        principals: Type.Optional(Type.Array(Type.String(), { minItems: 1, description: 'access key ids' })),
        operations: Type.Optional(Type.Array(Operation, { minItems: 1 })),
        methods: Type.Optional(Type.Array(Method, { minItems: 1 })),
      },
      { additionalProperties: false },
    ),
    action: OneOf(['allow', 'block'] as const),
    expires: Type.String({ description: 'an RFC 3339 timestamp, e.g. 2026-12-31T23:59:59Z' }),
    ticket: Type.String({ minLength: 1 }),
    reason: Type.String({ minLength: 1 }),
  },
  { additionalProperties: false },
);

export const ConfigSchema = Type.Object(
  {
    listen: Listen('0.0.0.0', 8080),
    // The admin listener. Tokens are named by file or environment variable,
    // never written here: config files end up in repositories and ConfigMaps.
    // Cross-field rules (a non-loopback bind needs a token) are in admin/config.ts.
    admin: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1' }),
        port: Type.Optional(Port),
        token_file: Type.Optional(Type.String({ minLength: 1, description: 'a file holding the admin bearer token' })),
        token_env: Type.Optional(Type.String({ minLength: 1, description: 'the name of an environment variable holding the admin bearer token' })),
        metrics_token_file: Type.Optional(Type.String({ minLength: 1, description: 'a file holding the /metrics scrape token' })),
        metrics_token_env: Type.Optional(Type.String({ minLength: 1, description: 'the name of an environment variable holding the /metrics scrape token' })),
        tls: Type.Optional(CertificateFiles),
      },
      { additionalProperties: false, default: { host: '127.0.0.1', port: 9464 } },
    ),
    // Opt-in: clients that set HTTPS_PROXY/HTTP_PROXY. A CONNECT to a host an
    // upstream's route admits is intercepted with a certificate minted from
    // the operator CA; anything else is refused (never an open proxy).
    forward_proxy: Type.Optional(
      Type.Object(
        {
          ca: Type.Object(
            {
              cert_file: Type.Optional(Type.String({ minLength: 1 })),
              key_file: Type.Optional(Type.String({ minLength: 1 })),
              cert_env: Type.Optional(Type.String({ minLength: 1 })),
              key_env: Type.Optional(Type.String({ minLength: 1 })),
            },
            { additionalProperties: false, description: 'the operator CA clients trust: cert_file or cert_env, key_file or key_env (PEM)' },
          ),
          max_certificates: Type.Integer({ minimum: 1, default: 1000, description: 'minted certificates kept (least recently used first out)' }),
          max_tunnels: Type.Integer({ minimum: 1, default: 4096, description: 'tunnels open at once; past it a CONNECT is answered 503 with Retry-After' }),
          users_file: Type.Optional(Type.String({ minLength: 1, description: 'a file of USER:PASSWORD lines: tunnels need Proxy-Authorization (Basic)' })),
          users_env: Type.Optional(Type.String({ minLength: 1, description: 'an environment variable holding USER:PASSWORD lines' })),
        },
        { additionalProperties: false },
      ),
    ),
    // Data-plane processes on the one listener (node:cluster). Each is its own replica with its own decision log (see src/cluster).
    workers: Type.Unsafe<number | 'auto'>({
      type: ['integer', 'string'],
      minimum: 1,
      maximum: MAX_WORKERS,
      pattern: '^auto$',
      default: 1,
      description: `an integer from 1 to ${MAX_WORKERS}, or "auto" (one per CPU core the process may use)`,
    }),
    allowed_jurisdictions: Type.Array(Jurisdiction, { minItems: 1, default: ['US'] }),
    mode: OneOf(MODES, { default: 'enforce' }),
    unknown_location: OneOf(['block', 'allow'] as const, { default: 'block' }),
    decision_log: Type.Object(
      {
        path: Type.String({
          minLength: 1,
          default: './decisions.log',
          description: 'the active log file (rotated files and digests go next to it), or "-" for stdout (no fsync, rotation or seals)',
        }),
        flush_ms: Type.Integer({
          minimum: 0,
          maximum: 1000,
          default: 0,
          description: 'group-commit window: extra wait before a batch is written and fsync\'d; 0 writes as soon as the previous fsync is done (batches then form by themselves under load)',
        }),
        fsync: Type.Boolean({
          default: true,
          description: 'fdatasync each batch before the response goes out (false survives a crash of the process, not of the machine)',
        }),
        rotate_bytes: Type.Integer({ minimum: 0, default: 134_217_728, description: 'rotate once the active file reaches this size (0: never)' }),
        rotate_seconds: Type.Integer({
          minimum: 0,
          default: 86_400,
          description: "rotate once the active file's first record is this old (0: never)",
        }),
        signing_key_file: Type.Optional(Type.String({ minLength: 1, description: 'PEM Ed25519 private key that signs the digests' })),
        signing_key_env: Type.Optional(
          Type.String({ minLength: 1, description: 'name of an environment variable holding the PEM signing key' }),
        ),
        client_address: OneOf(['full', 'truncate', 'hash'] as const, {
          default: 'full',
          description: 'how the client address is recorded: full, truncate (IPv4 /24, IPv6 /48) or hash (HMAC-SHA-256 with the salt)',
        }),
        client_salt_env: Type.String({
          minLength: 1,
          default: 'RESIDENCY_CLIENT_SALT',
          description: 'environment variable holding the per-deployment salt for client_address: hash',
        }),
        fail_open: Type.Array(Operation, {
          default: [],
          description: 'operations still answered while the log cannot be written; their records wait in memory until it can',
        }),
        stream: Type.Object(
          {
            key: Type.String({ minLength: 1, default: 'decisions', description: 'Redis Stream key (after redis.key_prefix)' }),
            maxlen: Type.Integer({ minimum: 1, default: 1_000_000, description: 'approximate cap on the stream length (XADD MAXLEN ~)' }),
          },
          { additionalProperties: false, default: {}, description: 'with redis configured, every record is also shipped to this stream' },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    log_level: OneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, { default: 'info' }),
    limits: Type.Object(
      {
        max_headers: Type.Integer({ minimum: 8, maximum: 10_000, default: 100 }),
        max_header_bytes: Type.Integer({ minimum: 1024, maximum: 1_048_576, default: 16_384 }),
        refusal_drain_bytes: Type.Integer({ minimum: 0, default: 1_048_576 }),
        refusal_linger_ms: Type.Integer({ minimum: 0, maximum: 60_000, default: 2_000 }),
        // A client's request head (a new connection's or tunnel's first included) must arrive within this long.
        client_header_timeout_ms: Type.Integer({ minimum: 100, maximum: 600_000, default: 30_000 }),
        shutdown_grace_ms: Type.Integer({ minimum: 0, default: 10_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    timeouts: Type.Object(
      {
        connect: Type.Number({ exclusiveMinimum: 0, default: 5 }),
        headers: Type.Number({ exclusiveMinimum: 0, default: 30 }),
        body: Type.Number({ exclusiveMinimum: 0, default: 300 }),
      },
      { additionalProperties: false, default: {} },
    ),
    demo_upstream: Type.Optional(
      Type.Object(
        { host: Type.String({ default: '127.0.0.1' }), port: Port },
        { additionalProperties: false, description: 'a built-in stand-in storage endpoint for trying the proxy' },
      ),
    ),
    redis: Type.Optional(
      Type.Object(
        { url: Type.String({ pattern: '^rediss?://' }), key_prefix: Type.String({ default: 'residency:' }) },
        { additionalProperties: false },
      ),
    ),
    // Fleet features (heartbeats, /fleet, lockdown) are on when `redis` is configured; these tune them.
    fleet: Type.Object(
      {
        heartbeat_seconds: Type.Number({
          minimum: 0.1,
          maximum: 300,
          default: 5,
          description: 'how often this replica publishes its heartbeat; it expires after three missed beats',
        }),
        drift_grace_seconds: Type.Number({
          minimum: 0,
          default: 60,
          description: 'how long two active policy hashes may coexist (a rollout) before /fleet flags drift',
        }),
        lockdown_poll_ms: Type.Integer({
          minimum: 50,
          maximum: 60_000,
          default: 500,
          description: 'how often the lockdown switch is re-read, backing up its pub/sub channel',
        }),
      },
      { additionalProperties: false, default: {}, description: 'fleet view and emergency lockdown (needs redis)' },
    ),
    dns: Type.Optional(
      Type.Object(
        {
          servers: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
          min_ttl: Type.Number({ minimum: 0, default: 5 }),
          max_ttl: Type.Number({ minimum: 0, default: 300 }),
          // How long the last good answer is served after it expired while resolution fails; then fail closed.
          grace_seconds: Type.Number({ minimum: 0, default: 60 }),
          timeout: Type.Number({ exclusiveMinimum: 0, default: 2, description: 'seconds one query to a DNS server may take' }),
          attempts: Type.Integer({ minimum: 1, maximum: 10, default: 2, description: 'tries per query before a resolution fails' }),
          // Clients choose the names a {host} upstream is sent to: these keep them from driving the proxy's DNS load.
          max_tracked_hosts: Type.Integer({
            minimum: 1,
            default: 1000,
            description:
              "how many host names {host} upstreams were asked for are tracked (kept resolved and refreshed in the background) at once; the configured upstreams' own hosts are not counted. Past it a name is resolved once, its answer kept for its TTL and not refreshed",
          }),
          max_new_hosts_per_second: Type.Number({
            exclusiveMinimum: 0,
            default: 50,
            description: 'first resolutions per second of host names {host} upstreams were asked for and the proxy does not track; past it such a name is not resolved, so its request has no located address',
          }),
        },
        { additionalProperties: false },
      ),
    ),
    networks: Type.Optional(Type.Record(Type.String(), SiteNetwork, { description: 'site CIDR → ISO code or { jurisdiction, region }' })),
    // Where upstream addresses are: DNS answers pinned (the proxy connects to
    // the address it located), then site networks, cloud IP ranges and GeoIP.
    location: Type.Object(
      {
        network: Type.Boolean({
          default: true,
          description: 'true or false; false: declared and request signals only, and upstream names are resolved by the HTTP client',
        }),
        pick: OneOf(['first', 'round-robin'] as const, { default: 'first', description: 'which address of a DNS answer is used: first, or round-robin' }),
        geoip: Type.Object(
          {
            enabled: Type.Boolean({ default: true }),
            path: Type.Optional(Type.String({ minLength: 1, description: 'an .mmdb file (relative to the config file); default: the bundled CC0 database' })),
            schema: Type.Optional(OneOf(['maxmind', 'ip-location-db'] as const, { description: 'override detection from database_type' })),
            watch: Type.Boolean({ default: true, description: 'reload the file when it changes' }),
          },
          { additionalProperties: false, default: {} },
        ),
        cloud_ranges: Type.Array(RangeFile, {
          default: [],
          description: 'provider IP-range files (AWS ip-ranges.json, Google cloud.json, Azure Service Tags), relative to the config file',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    upstreams: Type.Array(Upstream, { minItems: 1 }),
    rules: Type.Array(Rule, { default: [] }),
    exceptions: Type.Array(Exception, { default: [] }),
    // The secret keys of the principals exceptions name, so their signatures can be
    // verified: a file or an environment variable, never the config itself.
    principal_keys: Type.Optional(
      Type.Object(
        {
          file: Type.Optional(Type.String({ minLength: 1, description: 'a file of ACCESS_KEY_ID SECRET lines or a JSON object (relative to the config file)' })),
          env: Type.Optional(Type.String({ minLength: 1, description: 'an environment variable holding the same' })),
        },
        { additionalProperties: false, description: 'verification keys for exception principals: { file } or { env }' },
      ),
    ),
    shadow_policy: Type.Optional(Type.String({ minLength: 1, description: 'a config file whose policy is evaluated beside the active one' })),
    reload: Type.Object(
      {
        settle_ms: Type.Integer({
          minimum: 0,
          default: 1000,
          description: 'a changed policy file is loaded only once its content has been unchanged this long (ms), so a file written in parts is never half active',
        }),
      },
      { additionalProperties: false, default: {}, description: 'reloading the policy when its file changes (SIGHUP reloads at once)' },
    ),
  },
  { additionalProperties: false },
);

/** The file as validated, with schema defaults applied. */
export type RawConfig = Static<typeof ConfigSchema>;
export type RawUpstream = Static<typeof Upstream>;
export type Mode = (typeof MODES)[number];
export type Operation = (typeof OPERATIONS)[number];
export type Provider = (typeof PROVIDERS)[number];
export type ClassifyOverrideConfig = Static<typeof ClassifyOverride>;
