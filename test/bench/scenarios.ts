import type { LoadSpec } from './load.js';
import { INTERCEPT, PATHS } from './settings.js';

/** intercept: residency-proxy as a forward proxy (CONNECT); nginx-tls: nginx terminating TLS in front of the TLS upstream. */
export type TargetKind = 'direct' | 'bare' | 'nginx' | 'residency' | 'intercept' | 'nginx-tls';

/** What a scenario needs to know about a target. */
export interface TargetInfo {
  readonly name: string;
  readonly kind: TargetKind;
  /** residency-proxy only: whether writes to the eu-west-1 upstream are refused. */
  readonly enforce?: boolean;
}

export interface Scenario {
  readonly name: string;
  readonly title: string;
  /**
   * load: saturating closed loop; light: one connection (fixed rate with autocannon); big: one streaming upload;
   * https: saturating closed loop from the undici client, for the intercepted-HTTPS comparison;
   * first: the first request to new hosts through fresh tunnels, once per run.
   */
  readonly kind: 'load' | 'light' | 'big' | 'https' | 'first';
  readonly method: 'GET' | 'PUT';
  readonly path: string;
  readonly bodyBytes: number;
  readonly connections: number;
  /** 1 GiB uploads: how the body is framed. */
  readonly framing?: 'length' | 'chunked';
  /** Report body MB/s (uploads). */
  readonly mbps: boolean;
  /** Part of --quick. */
  readonly quick: boolean;
  appliesTo(t: TargetInfo): boolean;
  expectStatus(t: TargetInfo): number;
}

export const KIB = 1024;
export const MIB = 1024 * KIB;
export const GIB = 1024 * MIB;

/** Requests as an S3 client sends them (SigV4 header shapes), the same for every target. */
export function s3Headers(method: 'GET' | 'PUT', region: string): Record<string, string> {
  return {
    'x-amz-date': '20260101T000000Z',
    'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
    authorization:
      `AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/${region}/s3/aws4_request, ` +
      `SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=${'5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7'}`,
    ...(method === 'PUT' ? { 'content-type': 'application/octet-stream' } : {}),
  };
}

/** The load a plain-HTTP scenario puts on a target at `baseUrl` (http://127.0.0.1:PORT). */
export function loadSpec(scenario: Scenario, baseUrl: string, durationSec: number, connections = scenario.connections): LoadSpec {
  return {
    url: `${baseUrl}${scenario.path}`,
    method: scenario.method,
    headers: s3Headers(scenario.method, scenario.path.startsWith('/eu/') ? 'eu-west-1' : 'us-east-1'),
    bodyBytes: scenario.bodyBytes,
    connections,
    durationSec,
    ...(scenario.kind === 'light' ? { rate: LIGHT_RATE } : {}),
  };
}

// wrk and autocannon speak plain HTTP without CONNECT: the TLS targets take the https scenarios only.
const everyone = (t: TargetInfo) => t.kind !== 'intercept' && t.kind !== 'nginx-tls';
const ok = () => 200;
/** The intercepted-HTTPS comparison: the forward proxy, the plain setting it is compared with, nginx terminating TLS. */
const httpsPeers = (t: TargetInfo) => t.kind === 'intercept' || t.kind === 'nginx-tls' || t.name === INTERCEPT.plain;

export const SCENARIOS: readonly Scenario[] = [
  {
    name: 'get-small',
    title: 'small GET',
    kind: 'load',
    method: 'GET',
    path: `${PATHS.allowed}/small.txt`,
    bodyBytes: 0,
    connections: 32,
    mbps: false,
    quick: true,
    appliesTo: everyone,
    expectStatus: ok,
  },
  {
    name: 'put-small',
    title: 'small PUT allowed (128 B)',
    kind: 'load',
    method: 'PUT',
    path: `${PATHS.allowed}/small.bin`,
    bodyBytes: 128,
    connections: 32,
    mbps: false,
    quick: true,
    appliesTo: everyone,
    expectStatus: ok,
  },
  {
    name: 'put-refused',
    title: 'small PUT refused (128 B → eu-west-1)',
    kind: 'load',
    method: 'PUT',
    path: `${PATHS.refused}/small.bin`,
    bodyBytes: 128,
    connections: 32,
    mbps: false,
    quick: true,
    // Only an enforcing residency-proxy refuses; elsewhere it would be a plain PUT.
    appliesTo: (t) => t.kind === 'residency' && t.enforce === true,
    expectStatus: () => 403,
  },
  {
    name: 'put-16k',
    title: '16 KiB PUT',
    kind: 'load',
    method: 'PUT',
    path: `${PATHS.allowed}/16k.bin`,
    bodyBytes: 16 * KIB,
    connections: 32,
    mbps: true,
    quick: true,
    appliesTo: everyone,
    expectStatus: ok,
  },
  {
    name: 'put-1m',
    title: '1 MiB PUT (8 connections)',
    kind: 'load',
    method: 'PUT',
    path: `${PATHS.allowed}/1m.bin`,
    bodyBytes: MIB,
    connections: 8,
    mbps: true,
    quick: true,
    appliesTo: everyone,
    expectStatus: ok,
  },
  {
    name: 'light',
    title: 'light load: small PUT on 1 connection',
    kind: 'light',
    method: 'PUT',
    path: `${PATHS.allowed}/light.bin`,
    bodyBytes: 128,
    connections: 1,
    mbps: false,
    quick: true,
    // Added latency is measured against the bare proxy; nginx and direct give the floor.
    appliesTo: everyone,
    expectStatus: ok,
  },
  {
    name: 'https-get-small',
    title: 'small GET (undici client)',
    kind: 'https',
    method: 'GET',
    path: `${PATHS.allowed}/small.txt`,
    bodyBytes: 0,
    connections: 32,
    mbps: false,
    quick: true,
    appliesTo: httpsPeers,
    expectStatus: ok,
  },
  {
    name: 'https-put-small',
    title: 'small PUT allowed, 128 B (undici client)',
    kind: 'https',
    method: 'PUT',
    path: `${PATHS.allowed}/small.bin`,
    bodyBytes: 128,
    connections: 32,
    mbps: false,
    quick: true,
    appliesTo: httpsPeers,
    expectStatus: ok,
  },
  {
    name: 'https-first-request',
    title: 'first request to a new host',
    kind: 'first',
    method: 'GET',
    path: '/small.txt',
    bodyBytes: 0,
    connections: 1,
    mbps: false,
    quick: true,
    appliesTo: (t) => t.kind === 'intercept',
    expectStatus: ok,
  },
  {
    name: 'put-1g-length',
    title: '1 GiB PUT, Content-Length',
    kind: 'big',
    method: 'PUT',
    path: `${PATHS.allowed}/1g.bin`,
    bodyBytes: GIB,
    connections: 1,
    framing: 'length',
    mbps: true,
    quick: false,
    appliesTo: everyone,
    expectStatus: ok,
  },
  {
    name: 'put-1g-chunked',
    title: '1 GiB PUT, chunked',
    kind: 'big',
    method: 'PUT',
    path: `${PATHS.allowed}/1g-chunked.bin`,
    bodyBytes: GIB,
    connections: 1,
    framing: 'chunked',
    mbps: true,
    quick: false,
    appliesTo: everyone,
    expectStatus: ok,
  },
];

/** Light load's fixed rate with autocannon (requests/s): far below any target's saturation. */
export const LIGHT_RATE = 200;
